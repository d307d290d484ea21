-- Schema version 1: the log itself and the summary tables read by list and status queries.
-- Summary tables are updated in the same transaction as each append.

CREATE TABLE schema_version (version BIGINT NOT NULL);
INSERT INTO schema_version (version) VALUES (1);

-- The log. idx is assigned by the writer under the write lock (previous largest + 1).
-- body is the event's JSON without idx; the other columns exist for filtering.
CREATE TABLE events (
    idx BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    timestamp BIGINT NOT NULL,
    build_request_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    partition_ref TEXT COLLATE "C",
    job_run_id TEXT,
    job_label TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_build ON events (build_request_id, idx);
CREATE INDEX events_by_partition ON events (partition_ref, idx);
CREATE INDEX events_by_job ON events (job_label, idx);

-- One row per build request; created_idx orders them newest first.
CREATE TABLE builds (
    build_request_id TEXT PRIMARY KEY,
    created_idx BIGINT NOT NULL,
    status TEXT NOT NULL,
    requested_partitions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX builds_by_created ON builds (created_idx);
CREATE INDEX builds_by_status ON builds (status, created_idx);
-- Unfinished builds are few among many: a partial index finds them without a scan.
CREATE INDEX builds_unfinished ON builds (created_idx)
    WHERE status NOT IN ('BUILD_REQUEST_COMPLETED', 'BUILD_REQUEST_FAILED', 'BUILD_REQUEST_CANCELLED');

-- How many of a build's job runs are in each status.
CREATE TABLE build_job_counts (
    build_request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (build_request_id, status)
);

-- The partition catalog: each ref's latest status over all builds.
CREATE TABLE partitions (
    partition_ref TEXT COLLATE "C" PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_idx BIGINT NOT NULL,
    build_request_id TEXT,
    job_run_id TEXT,
    job_label TEXT,
    reversed_ref TEXT COLLATE "C" NOT NULL
);
CREATE INDEX partitions_by_updated ON partitions (updated_idx);
CREATE INDEX partitions_by_status ON partitions (status, updated_idx);
-- The ref spelled backwards: patterns like '*/2026-01-01' become a range on it.
CREATE INDEX partitions_by_reversed_ref ON partitions (reversed_ref);

-- Each ref's latest status within each build: what partition transitions are checked against.
CREATE TABLE build_partitions (
    build_request_id TEXT NOT NULL,
    partition_ref TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (build_request_id, partition_ref)
);

-- One row per job run ("task").
CREATE TABLE job_runs (
    job_run_id TEXT PRIMARY KEY,
    build_request_id TEXT NOT NULL,
    job_label TEXT NOT NULL,
    outputs TEXT NOT NULL,
    status TEXT NOT NULL,
    created_idx BIGINT NOT NULL,
    updated_idx BIGINT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    exit_code BIGINT,
    message TEXT NOT NULL
);
CREATE INDEX job_runs_by_created ON job_runs (created_idx);
CREATE INDEX job_runs_by_build ON job_runs (build_request_id, created_idx);
CREATE INDEX job_runs_by_label ON job_runs (job_label, created_idx);
CREATE INDEX job_runs_by_status ON job_runs (status, created_idx);
CREATE INDEX job_runs_by_label_status ON job_runs (job_label, status, created_idx);

-- Which job runs were planned to produce each ref.
CREATE TABLE job_run_outputs (
    partition_ref TEXT COLLATE "C" NOT NULL,
    job_run_id TEXT NOT NULL,
    PRIMARY KEY (partition_ref, job_run_id)
);

-- Schema version 8: job runs on Celery workers (SPEC §10). Times are Unix nanoseconds on the
-- database's clock.

-- One row per attempt of a run handed to a worker. The service inserts it 'queued' before it
-- publishes the message; a worker takes it ('running') with a compare-and-set on run id,
-- attempt, epoch (the service following it) and state, so a second delivery finds it taken.
-- state: queued, running, ended (the worker recorded the exit status), lost (its heartbeat
-- stopped: the service failed it), cancelled (cancelled before a worker took it).
CREATE TABLE remote_attempts (
    job_run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    build_request_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    pid BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    exit_code INTEGER,
    signal INTEGER,
    timed_out BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled BOOLEAN NOT NULL DEFAULT FALSE,
    stderr_tail TEXT NOT NULL DEFAULT '',
    published_at BIGINT NOT NULL,
    started_at BIGINT,
    heartbeat_at BIGINT,
    ended_at BIGINT,
    PRIMARY KEY (job_run_id, attempt)
);
CREATE INDEX remote_attempts_open ON remote_attempts (epoch) WHERE state IN ('queued', 'running');

-- One row per worker that ever started; heartbeat_at is renewed while it runs.
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at BIGINT
);

-- The lines remote runs print, in chunks (one JSON object per line, as in a run log).
CREATE TABLE run_log_chunks (
    job_run_id TEXT NOT NULL,
    seq BIGSERIAL,
    attempt INTEGER NOT NULL,
    lines TEXT NOT NULL,
    PRIMARY KEY (job_run_id, seq)
);

UPDATE schema_version SET version = 8;

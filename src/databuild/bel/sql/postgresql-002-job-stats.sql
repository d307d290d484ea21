-- Schema version 2: per-job statistics kept up to date instead of aggregated from job_runs
-- on every read. Existing logs get them computed from their job runs.

CREATE TABLE job_stats (
    job_label TEXT PRIMARY KEY,
    runs BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    timed_runs BIGINT NOT NULL,
    total_duration_ns BIGINT NOT NULL,
    last_run_at BIGINT,
    updated_idx BIGINT NOT NULL
);
CREATE INDEX job_stats_by_updated ON job_stats (updated_idx);

INSERT INTO job_stats
SELECT
    job_label,
    count(*),
    sum(CASE WHEN status = 'JOB_COMPLETED' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'JOB_FAILED' THEN 1 ELSE 0 END),
    sum(CASE WHEN status IN ('JOB_COMPLETED', 'JOB_FAILED') AND started_at IS NOT NULL
        THEN 1 ELSE 0 END),
    sum(CASE WHEN status IN ('JOB_COMPLETED', 'JOB_FAILED') AND started_at IS NOT NULL
        THEN ended_at - started_at ELSE 0 END),
    max(started_at),
    max(updated_idx)
FROM job_runs
GROUP BY job_label;

UPDATE schema_version SET version = 2;

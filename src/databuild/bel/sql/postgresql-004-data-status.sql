-- Schema version 4: the catalog is the data's truth (SPEC §4.2, bel/catalog.py). A ref's
-- catalog status changes only by events of a job run that ran for it: a PARTITION_BUILDING,
-- or the AVAILABLE / FAILED that follows a BUILDING in the same build. data_idx is the idx of
-- the latest such event, NULL while no run has touched the ref (its catalog row then shows its
-- latest bookkeeping status). Existing logs get their catalog derived again from their
-- history; no event is changed or dropped.

ALTER TABLE partitions ADD COLUMN data_idx BIGINT;

WITH steps AS (
    SELECT idx, timestamp, build_request_id, partition_ref, job_run_id, job_label,
        body::jsonb ->> 'status' AS status,
        lag(body::jsonb ->> 'status') OVER (
            PARTITION BY build_request_id, partition_ref ORDER BY idx
        ) AS previous
    FROM events
    WHERE event_type = 'partition'
), data AS (
    SELECT *, row_number() OVER (PARTITION BY partition_ref ORDER BY idx DESC) AS newest
    FROM steps
    WHERE status = 'PARTITION_BUILDING' OR previous = 'PARTITION_BUILDING'
)
UPDATE partitions SET
    status = data.status, updated_at = data.timestamp, updated_idx = data.idx,
    build_request_id = data.build_request_id, job_run_id = data.job_run_id,
    job_label = data.job_label, data_idx = data.idx
FROM data
WHERE data.newest = 1 AND data.partition_ref = partitions.partition_ref;

UPDATE schema_version SET version = 4;

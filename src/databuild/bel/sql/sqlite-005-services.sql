-- Schema version 5: services sharing the log, their leases, and the claims of running job
-- runs (SPEC §5.8). Times are Unix nanoseconds on the database's clock.

-- One row per service that ever opened the log. state: live (holding its lease while
-- expires_at is ahead), stopped (it stopped cleanly), dead (its lease expired or its process
-- died, and a sweeper took its builds over: taken_over_by names the sweeper).
CREATE TABLE services (
    service_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    process_start BIGINT NOT NULL,
    version TEXT NOT NULL,
    workspace TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL,
    expires_at BIGINT,
    state TEXT NOT NULL,
    taken_over_by TEXT,
    ended_at BIGINT
);
CREATE INDEX services_live ON services (expires_at) WHERE state = 'live';

-- The refs of job runs about to run or running: at most one run per ref. A claim goes in
-- the transaction that stores its run's final event; one held by a service that is no longer
-- live counts for nothing and is replaced by the next claimer.
CREATE TABLE claims (
    partition_ref TEXT PRIMARY KEY,
    job_run_id TEXT NOT NULL,
    build_request_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    claimed_at BIGINT NOT NULL
);
CREATE INDEX claims_by_run ON claims (job_run_id);
CREATE INDEX claims_by_service ON claims (service_id);

-- The service that accepted each build: its owner. NULL for builds of older services.
ALTER TABLE builds ADD COLUMN service_id TEXT;
CREATE INDEX builds_unfinished_by_owner ON builds (service_id, created_idx)
    WHERE status NOT IN ('BUILD_REQUEST_COMPLETED', 'BUILD_REQUEST_FAILED', 'BUILD_REQUEST_CANCELLED');

UPDATE schema_version SET version = 5;

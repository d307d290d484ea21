-- Schema version 6: retries (SPEC §9). A build started by `builds retry` names the build it
-- retries (its build_request event's retry_of); the partial index finds the retries of a
-- build without a scan. Builds recorded before have no retry_of: nothing to derive.

ALTER TABLE builds ADD COLUMN retry_of TEXT;
CREATE INDEX builds_by_retry_of ON builds (retry_of, created_idx) WHERE retry_of IS NOT NULL;

UPDATE schema_version SET version = 6;

-- Schema version 8: nothing for SQLite. Runs on Celery workers (SPEC §10) need a PostgreSQL
-- log; the number keeps both dialects at one version.

UPDATE schema_version SET version = 8;

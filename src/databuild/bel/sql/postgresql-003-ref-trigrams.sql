-- Schema version 3: a trigram index of the catalog's refs, for patterns like '*1999-01-01*'
-- whose literal text is in the middle, where no range of partitions_by_* holds the matches.
-- Queries reach it through LIKE. pg_trgm may be missing or not installable by this role: the
-- log then works without the index (such patterns test every catalog entry), and the
-- service says so when it opens the log.

DO $$
DECLARE
    trgm_schema TEXT;
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    -- The extension may live in a schema off this log's search_path.
    SELECT n.nspname INTO trgm_schema
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX partitions_by_ref_trigrams ON partitions'
        ' USING gin (partition_ref %I.gin_trgm_ops)',
        trgm_schema
    );
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE NOTICE 'no trigram index on partitions: %', SQLERRM;
END
$$;

UPDATE schema_version SET version = 3;

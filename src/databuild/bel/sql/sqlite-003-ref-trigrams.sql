-- Schema version 3: a trigram index of the catalog's refs, for patterns like '*1999-01-01*'
-- whose literal text is in the middle, where no range of partitions_by_* holds the matches.
-- FTS5's trigram tokenizer answers GLOB from it. A catalog row's ref never changes, so the
-- trigger only adds new refs (an upsert that updates a row does not fire it).

CREATE VIRTUAL TABLE partition_ref_trigrams USING fts5(
    partition_ref, tokenize = 'trigram case_sensitive 1', detail = 'none'
);
CREATE TRIGGER partitions_add_ref_trigrams AFTER INSERT ON partitions BEGIN
    INSERT INTO partition_ref_trigrams (partition_ref) VALUES (new.partition_ref);
END;

INSERT INTO partition_ref_trigrams (partition_ref) SELECT partition_ref FROM partitions;

UPDATE schema_version SET version = 3;

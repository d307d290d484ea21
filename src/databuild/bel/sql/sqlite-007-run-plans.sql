-- Schema version 7: what the dashboard draws of a big build without reading its whole plan
-- (docs/dashboard.md). The job_graph event stays the record; these rows are written with it.

-- Each planned job run's config: its inputs (JSON [{"partition_ref", "dep_type"}]), args
-- (JSON list) and env (JSON object), for the run page and a partition's lineage.
CREATE TABLE job_run_plans (
    job_run_id TEXT PRIMARY KEY,
    build_request_id TEXT NOT NULL,
    job_label TEXT NOT NULL,
    inputs TEXT NOT NULL,
    args TEXT NOT NULL,
    env TEXT NOT NULL
);
CREATE INDEX job_run_plans_by_build ON job_run_plans (build_request_id, job_label);

-- Which planned runs read each ref: a partition's downstream.
CREATE TABLE job_run_inputs (
    partition_ref TEXT NOT NULL,
    job_run_id TEXT NOT NULL,
    PRIMARY KEY (partition_ref, job_run_id)
) WITHOUT ROWID;

-- Which job of a build's plan makes each ref: the upstream end of a job edge, found across
-- the pieces a big graph is stored in.
CREATE TABLE build_planned_outputs (
    build_request_id TEXT NOT NULL,
    partition_ref TEXT NOT NULL,
    job_label TEXT NOT NULL,
    PRIMARY KEY (build_request_id, partition_ref, job_label)
) WITHOUT ROWID;

-- The job-level graph of each build: a job reads what another job of the same build makes.
CREATE TABLE build_job_edges (
    build_request_id TEXT NOT NULL,
    upstream TEXT NOT NULL,
    downstream TEXT NOT NULL,
    PRIMARY KEY (build_request_id, upstream, downstream)
) WITHOUT ROWID;

-- A build's runs counted per job and status, and a job's partitions in ref order, from the
-- index alone.
CREATE INDEX job_runs_by_build_label_status ON job_runs (build_request_id, job_label, status);
CREATE INDEX partitions_by_job ON partitions (job_label, partition_ref, status);

INSERT OR IGNORE INTO job_run_plans
SELECT
    json_extract(r.value, '$.job_run_id'),
    e.build_request_id,
    json_extract(r.value, '$.job_label'),
    (SELECT json_group_array(json_object(
         'partition_ref', json_extract(i.value, '$.partition_ref.str'),
         'dep_type', COALESCE(json_extract(i.value, '$.dep_type_name'), 'materialize')))
     FROM json_each(r.value, '$.inputs') AS i),
    COALESCE(json_extract(r.value, '$.args'), '[]'),
    COALESCE(json_extract(r.value, '$.env'), '{}')
FROM events AS e, json_each(e.body, '$.job_graph.job_runs') AS r
WHERE e.event_type = 'job_graph';

INSERT OR IGNORE INTO job_run_inputs
SELECT json_extract(i.value, '$.partition_ref'), p.job_run_id
FROM job_run_plans AS p, json_each(p.inputs) AS i;

INSERT OR IGNORE INTO build_planned_outputs
SELECT e.build_request_id, o.value, json_extract(r.value, '$.job_label')
FROM events AS e, json_each(e.body, '$.job_graph.job_runs') AS r,
    json_each(r.value, '$.outputs') AS o
WHERE e.event_type = 'job_graph';

INSERT OR IGNORE INTO build_job_edges
SELECT DISTINCT o.build_request_id, o.job_label, p.job_label
FROM build_planned_outputs AS o
JOIN job_run_inputs AS i ON i.partition_ref = o.partition_ref
JOIN job_run_plans AS p ON p.job_run_id = i.job_run_id
WHERE p.build_request_id = o.build_request_id AND o.job_label <> p.job_label;

UPDATE schema_version SET version = 7;

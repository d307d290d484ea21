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
    partition_ref TEXT COLLATE "C" NOT NULL,
    job_run_id TEXT NOT NULL,
    PRIMARY KEY (partition_ref, job_run_id)
);

-- Which job of a build's plan makes each ref: the upstream end of a job edge, found across
-- the pieces a big graph is stored in.
CREATE TABLE build_planned_outputs (
    build_request_id TEXT NOT NULL,
    partition_ref TEXT COLLATE "C" NOT NULL,
    job_label TEXT NOT NULL,
    PRIMARY KEY (build_request_id, partition_ref, job_label)
);

-- The job-level graph of each build: a job reads what another job of the same build makes.
CREATE TABLE build_job_edges (
    build_request_id TEXT NOT NULL,
    upstream TEXT NOT NULL,
    downstream TEXT NOT NULL,
    PRIMARY KEY (build_request_id, upstream, downstream)
);

-- A build's runs counted per job and status, and a job's partitions in ref order, from the
-- index alone.
CREATE INDEX job_runs_by_build_label_status ON job_runs (build_request_id, job_label, status);
CREATE INDEX partitions_by_job ON partitions (job_label, partition_ref, status);

INSERT INTO job_run_plans
SELECT
    r.value ->> 'job_run_id',
    e.build_request_id,
    r.value ->> 'job_label',
    COALESCE((SELECT json_agg(json_build_object(
         'partition_ref', i.value -> 'partition_ref' ->> 'str',
         'dep_type', COALESCE(i.value ->> 'dep_type_name', 'materialize')))
     FROM jsonb_array_elements(r.value -> 'inputs') AS i), '[]')::text,
    COALESCE(r.value -> 'args', '[]')::text,
    COALESCE(r.value -> 'env', '{}')::text
FROM events AS e, jsonb_array_elements(e.body::jsonb -> 'job_graph' -> 'job_runs') AS r
WHERE e.event_type = 'job_graph'
ON CONFLICT DO NOTHING;

INSERT INTO job_run_inputs
SELECT i.value ->> 'partition_ref', p.job_run_id
FROM job_run_plans AS p, jsonb_array_elements(p.inputs::jsonb) AS i
ON CONFLICT DO NOTHING;

INSERT INTO build_planned_outputs
SELECT e.build_request_id, o.value, r.value ->> 'job_label'
FROM events AS e, jsonb_array_elements(e.body::jsonb -> 'job_graph' -> 'job_runs') AS r,
    jsonb_array_elements_text(r.value -> 'outputs') AS o
WHERE e.event_type = 'job_graph'
ON CONFLICT DO NOTHING;

INSERT INTO build_job_edges
SELECT DISTINCT o.build_request_id, o.job_label, p.job_label
FROM build_planned_outputs AS o
JOIN job_run_inputs AS i ON i.partition_ref = o.partition_ref
JOIN job_run_plans AS p ON p.job_run_id = i.job_run_id
WHERE p.build_request_id = o.build_request_id AND o.job_label <> p.job_label
ON CONFLICT DO NOTHING;

UPDATE schema_version SET version = 7;

// The build page: its job graph, progress, timeline and logs, live from the progress stream.
// Up to data-run-level-limit runs it draws every run; above, one node per job label with its
// runs counted by status (from GET /ui/builds/{id}/jobs, then kept current from the stream,
// which resumes after the counted events), and clicking a job lists its runs, paged.
"use strict";
(() => {
  const root = document.getElementById("build");
  const buildId = root.dataset.build;
  const runLevelLimit = Number(root.dataset.runLevelLimit);
  const createdNs = Number(root.dataset.created);
  const graphBox = document.getElementById("graph");
  const FINAL = ["JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED", "JOB_SKIPPED"];
  const enc = encodeURIComponent;
  let view = null;
  let finished = root.dataset.final === "true";
  let total = 0, done = 0;
  let logSource = null;

  function fetchJson(url) {
    return fetch(url, { cache: "no-store" }).then((response) => {
      if (!response.ok) throw new Error(url + " answered " + response.status);
      return response.json();
    });
  }

  // --- what every mode shares ------------------------------------------------------------

  function showProgress() {
    const box = document.getElementById("progress");
    if (!total) { box.textContent = "waiting for the plan"; return; }
    let text = `${done.toLocaleString()} / ${total.toLocaleString()} runs done ` +
               `(${(100 * done / total).toFixed(1)} %)`;
    if (!finished && done > 0 && done < total) {
      const elapsed = Date.now() / 1000 - createdNs / 1e9;
      text += ` · about ${dbLive.seconds(elapsed * (total - done) / done)} left`;
    }
    box.textContent = text;
    if (!finished) {
      document.getElementById("build-duration").textContent =
        dbLive.seconds(Date.now() / 1000 - createdNs / 1e9) + " so far";
    }
  }

  function setStatus(status, message) {
    document.getElementById("build-status").replaceChildren(dbLive.badge(status));
    document.getElementById("build-message").textContent = message || "";
  }

  function ended(event) {
    finished = true;
    document.getElementById("build-ended").textContent =
      new Date(event.timestamp / 1e6).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    document.getElementById("build-duration").textContent =
      dbLive.seconds((event.timestamp - createdNs) / 1e9);
  }

  const handlers = {
    build_request(event) {
      setStatus(event.status, event.message);
      if (/COMPLETED$|FAILED$|CANCELLED$/.test(event.status) &&
          event.status !== "BUILD_REQUEST_ANALYSIS_COMPLETED") ended(event);
    },
    finished(event) {
      finished = true;
      setStatus(event.status, event.message);
      clearInterval(ticker);
      showProgress();
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      root.dataset.finished = "true";
    },
  };

  function showLog(run) {
    if (logSource) logSource.close();
    const title = document.getElementById("log-title");
    const link = document.createElement("a");
    link.href = "/tasks/" + enc(run.job_run_id);
    link.textContent = run.job_label + " " + (run.outputs[0] || "") +
      (run.outputs.length > 1 ? ` +${run.outputs.length - 1}` : "");
    title.replaceChildren(link);
    logSource = dbLive.followLog(run.job_run_id, document.getElementById("log"));
  }

  document.getElementById("zoom-in").addEventListener("click", () => view && view.zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => view && view.zoom(0.8));
  document.getElementById("zoom-fit").addEventListener("click", () => view && view.fit());

  // --- every run drawn (small builds) -----------------------------------------------------

  function drawRuns() {
    const runs = new Map();  // job_run_id -> run (as dbGraph takes it, with times)
    let selected = null;
    let stale = true;
    let source = null;

    function ensure(data) {
      let run = runs.get(data.job_run_id);
      if (!run) {
        run = dbGraph.fromPlan({ ...data, inputs: data.inputs || [] });
        run.started = null;
        run.ended = null;
        runs.set(run.job_run_id, run);
        stale = true;
      }
      return run;
    }

    function redraw() {
      if (stale) {
        view = dbGraph.draw(graphBox, [...runs.values()], select);
        stale = false;
        if (selected) view.select(selected);
        graphBox.dataset.ready = "true";
      }
      for (const run of runs.values()) view.setStatus(run.job_run_id, run.status);
      total = runs.size;
      done = [...runs.values()].filter((r) => FINAL.includes(r.status)).length;
      showProgress();
      timeline();
    }

    function timeline() {
      const box = document.getElementById("timeline");
      const timed = [...runs.values()].filter((r) => r.started !== null);
      if (!timed.length) { box.textContent = "no job run has started"; return; }
      const nowNs = Date.now() * 1e6;
      const t0 = Math.min(...timed.map((r) => r.started));
      const t1 = Math.max(...timed.map((r) => r.ended ?? Math.max(nowNs, r.started)));
      const span = Math.max(t1 - t0, 1);
      box.replaceChildren();
      for (const run of timed.sort((a, b) => a.started - b.started)) {
        const row = document.createElement("div");
        row.className = "row";
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = run.job_label + " " + dbGraph.middle(run.outputs[0] || "", 28);
        label.title = run.job_label + " " + run.outputs.join(" ");
        const track = document.createElement("div");
        track.className = "track";
        const bar = document.createElement("div");
        bar.className = "bar s-" + dbLive.short(run.status);
        const end = run.ended ?? Math.max(nowNs, run.started);
        bar.style.left = (100 * (run.started - t0) / span) + "%";
        bar.style.width = (100 * (end - run.started) / span) + "%";
        track.appendChild(bar);
        const took = document.createElement("span");
        took.textContent = ((end - run.started) / 1e9).toFixed(1) + " s";
        row.append(label, track, took);
        box.appendChild(row);
      }
    }

    function select(id) {
      selected = id;
      view.select(id);
      showLog(runs.get(id));
    }

    source = dbLive.follow(buildId, {
      ...handlers,
      job_graph(event) {
        if (event.job_graph.job_runs.length > runLevelLimit) {
          source.close();
          drawJobs();
          return;
        }
        for (const run of event.job_graph.job_runs) ensure(run);
        redraw();
      },
      job(event) {
        const run = ensure(event);
        run.status = event.status;
        if (event.status === "JOB_RUNNING") run.started = event.timestamp;
        if (FINAL.includes(event.status)) {
          run.ended = event.timestamp;
          if (run.started === null && event.status !== "JOB_SKIPPED") run.started = event.timestamp;
        }
        redraw();
      },
      finished(event) {
        handlers.finished(event);
        timeline();
        if (!runs.size) graphBox.dataset.ready = "true";
      },
    }, root);
    return timeline;
  }

  // --- one node per job (big builds) ------------------------------------------------------

  // The status a run had before `status`, for a run this page has not seen (SPEC §4.2).
  function before(status) {
    if (status === "JOB_SCHEDULED") return null;
    if (status === "JOB_COMPLETED" || status === "JOB_FAILED") return "JOB_RUNNING";
    return "JOB_SCHEDULED";  // running, skipped, or cancelled before it ran
  }

  function drawJobs() {
    document.getElementById("timeline-card").hidden = true;
    document.getElementById("graph-mode").textContent =
      `by job: more than ${runLevelLimit} runs; click a job for its runs`;
    fetchJson("/ui/builds/" + enc(buildId) + "/jobs").then((summary) => {
      const jobs = new Map();
      for (const job of summary.jobs) {
        jobs.set(job.job_label, { runs: job.runs, counts: { ...job.job_runs } });
      }
      // Runs whose status this page knows: the running ones named, and those seen since.
      const known = new Map(summary.running.map((r) => [r.job_run_id, "JOB_RUNNING"]));
      const count = (c) => FINAL.reduce((sum, s) => sum + (c[s] || 0), 0);
      total = summary.runs;
      done = [...jobs.values()].reduce((sum, j) => sum + count(j.counts), 0);
      view = dbGraph.drawJobs(graphBox, summary.jobs, summary.edges, selectJob);
      graphBox.dataset.ready = "true";
      showProgress();

      const dirty = new Set();
      let frame = 0;
      function flush() {
        frame = 0;
        for (const label of dirty) {
          const job = jobs.get(label);
          view.update(label, job.runs, job.counts);
        }
        dirty.clear();
        showProgress();
      }
      dbLive.follow(buildId, {
        ...handlers,
        job(event) {
          let job = jobs.get(event.job_label);
          if (!job) {  // a job the summary did not know: draw again from a new summary
            location.reload();
            return;
          }
          const previous = known.has(event.job_run_id) ? known.get(event.job_run_id)
                                                       : before(event.status);
          if (previous && job.counts[previous] > 0) job.counts[previous] -= 1;
          job.counts[event.status] = (job.counts[event.status] || 0) + 1;
          const counted = Object.values(job.counts).reduce((a, b) => a + b, 0);
          if (counted > job.runs) { total += counted - job.runs; job.runs = counted; }
          if (FINAL.includes(event.status)) {
            known.delete(event.job_run_id);
            done += 1;
          } else {
            known.set(event.job_run_id, event.status);
          }
          dirty.add(event.job_label);
          if (!frame) frame = requestAnimationFrame(flush);
        },
      }, root, summary.as_of_idx);
    }).catch(() => window.dbAlive.check());
  }

  // --- a job's runs, paged (big builds) ---------------------------------------------------

  const PAGE = 50;
  let listed = { label: null, offset: 0 };

  function selectJob(label) {
    listed = { label, offset: 0 };
    view.select(label);
    document.getElementById("job-runs").hidden = false;
    document.getElementById("job-runs-label").textContent = label;
    listRuns();
  }

  function listRuns() {
    const status = document.getElementById("job-runs-status").value;
    const query = new URLSearchParams({ build_request_id: buildId, job_label: listed.label,
                                        limit: PAGE, offset: listed.offset });
    if (status) query.set("status", status);
    fetchJson("/ui/tasks?" + query).then((page) => {
      const body = document.querySelector("#job-runs tbody");
      body.replaceChildren();
      for (const run of page.tasks) {
        const row = document.createElement("tr");
        row.dataset.run = run.job_run_id;
        const id = document.createElement("a");
        id.href = "/tasks/" + enc(run.job_run_id);
        id.textContent = run.job_run_id.slice(0, 12);
        const outputs = document.createElement("span");
        outputs.textContent = dbGraph.middle(run.outputs[0] || "", 48) +
          (run.outputs.length > 1 ? ` +${run.outputs.length - 1}` : "");
        outputs.title = run.outputs.join("\n");
        const log = document.createElement("button");
        log.className = "secondary small";
        log.textContent = "log";
        log.addEventListener("click", () => showLog(run));
        const cells = [id, dbLive.badge(run.status), outputs,
                       dbLive.seconds(run.duration_s), log];
        for (const content of cells) {
          const cell = document.createElement("td");
          cell.append(content);
          row.appendChild(cell);
        }
        body.appendChild(row);
      }
      if (!page.tasks.length) {
        body.innerHTML = '<tr><td colspan="5" class="empty">none</td></tr>';
      }
      const first = page.tasks.length ? listed.offset + 1 : listed.offset;
      document.getElementById("job-runs-range").textContent =
        `${first}–${listed.offset + page.tasks.length}` +
        (page.total !== null ? ` of ${page.total.toLocaleString()}` : "");
      document.getElementById("job-runs-newer").hidden = listed.offset === 0;
      document.getElementById("job-runs-older").hidden = !page.has_more;
    }).catch(() => window.dbAlive.check());
  }

  document.getElementById("job-runs-newer").addEventListener("click", () => {
    listed.offset = Math.max(0, listed.offset - PAGE);
    listRuns();
  });
  document.getElementById("job-runs-older").addEventListener("click", () => {
    listed.offset += PAGE;
    listRuns();
  });
  document.getElementById("job-runs-status").addEventListener("change", () => {
    listed.offset = 0;
    listRuns();
  });

  // --- start ------------------------------------------------------------------------------

  let refresh = () => {};
  const ticker = setInterval(() => { refresh(); showProgress(); }, 1000);
  if (Number(root.dataset.runs) > runLevelLimit) drawJobs();
  else refresh = drawRuns();
})();

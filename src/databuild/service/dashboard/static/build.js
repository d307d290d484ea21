// The build page: its job graph, timeline and logs, live from the build's progress stream.
"use strict";
(() => {
  const root = document.getElementById("build");
  const buildId = root.dataset.build;
  const runs = new Map();  // job_run_id -> run (as dbGraph takes it, with times)
  let graph = null;
  let selected = null;

  function ensure(data) {
    let run = runs.get(data.job_run_id);
    if (!run) {
      run = dbGraph.fromPlan({ ...data, inputs: data.inputs || [] });
      run.started = null;
      run.ended = null;
      runs.set(run.job_run_id, run);
      graph = null;
    }
    return run;
  }

  function redraw() {
    if (!graph) {
      graph = dbGraph.draw(document.getElementById("graph"), [...runs.values()], select);
      if (selected) graph.select(selected);
    }
    for (const run of runs.values()) graph.setStatus(run.job_run_id, run.status);
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
      label.textContent = run.job_label + " " + (run.outputs[0] || "");
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
    if (graph) graph.select(id);
    const run = runs.get(id);
    document.getElementById("log-title").textContent = run.job_label + " " + run.outputs.join(" ");
    fetch("/ui/tasks/" + encodeURIComponent(id) + "/log", { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : { lines: [] }))
      .then((doc) => {
        const log = document.getElementById("log");
        log.replaceChildren();
        if (!doc.lines.length) log.textContent = "(no output yet)";
        for (const line of doc.lines) {
          const span = document.createElement("span");
          span.className = line.stream;
          span.textContent = line.text + "\n";
          log.appendChild(span);
        }
      })
      .catch(() => window.dbAlive.check());
  }

  function setStatus(status, message) {
    document.getElementById("build-status").replaceChildren(dbLive.badge(status));
    document.getElementById("build-message").textContent = message || "";
  }

  const ticker = setInterval(timeline, 1000);
  dbLive.follow(buildId, {
    job_graph(event) {
      for (const run of event.job_graph.job_runs) ensure(run);
      redraw();
    },
    job(event) {
      const run = ensure(event);
      run.status = event.status;
      if (event.status === "JOB_RUNNING") run.started = event.timestamp;
      if (["JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED", "JOB_SKIPPED"].includes(event.status)) {
        run.ended = event.timestamp;
        if (run.started === null && event.status !== "JOB_SKIPPED") run.started = event.timestamp;
        if (selected === run.job_run_id) select(selected);
      }
      redraw();
    },
    build_request(event) { setStatus(event.status, event.message); },
    finished(event) {
      setStatus(event.status, event.message);
      clearInterval(ticker);
      timeline();
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      root.dataset.finished = "true";
    },
  }, root);
})();

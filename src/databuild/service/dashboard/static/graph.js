// Draws job graphs with dagre's layout as SVG: one node per job run (small builds, analyze),
// or one node per job label with its runs counted by status (big builds, SPEC §8).
"use strict";
window.dbGraph = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const RUN = { width: 220, height: 44, chars: 33 };
  const JOB = { width: 250, height: 74, chars: 34 };
  const READABLE = 0.7;
  const STATUSES = ["JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED", "JOB_SKIPPED",
                    "JOB_RUNNING", "JOB_SCHEDULED"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  // Refs differ at their end (a date, a colour): keep more of the end than of the start.
  function middle(text, n) {
    if (text.length <= n) return text;
    const head = Math.ceil((n - 1) * 0.35);
    return text.slice(0, head) + "…" + text.slice(text.length - (n - 1 - head));
  }

  function layout(nodes, edges, size) {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 10, ranksep: 56, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const id of nodes) g.setNode(id, { width: size.width, height: size.height });
    for (const [from, to] of edges) g.setEdge(from, to);
    dagre.layout(g);
    return g;
  }

  // An SVG of size in container, with zoom: wheel with Ctrl, or zoom(factor); draws the
  // points of edges (dagre's) as arrows.
  function canvas(container, size, edges) {
    const width = Math.max(size.width, 1), height = Math.max(size.height, 1);
    container.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": "job graph" }, container);
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                  markerWidth: 7, markerHeight: 7, orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }, marker);
    for (const points of edges) {
      const d = points.map((p, i) => (i ? "L" : "M") + p.x + "," + p.y).join(" ");
      el("path", { d, class: "edge", "marker-end": "url(#arrow)" }, svg);
    }
    let scale = 1;
    function zoom(factor) {
      scale = Math.min(4, Math.max(0.1, scale * factor));
      svg.setAttribute("width", width * scale);
      svg.setAttribute("height", height * scale);
    }
    // The whole width, or (at first) no smaller than text stays readable; scroll for the rest.
    function fit(least) {
      scale = 1;
      zoom(Math.max(least || 0, Math.min(1, (container.clientWidth - 4) / width)));
    }
    container.addEventListener("wheel", (event) => {
      if (!event.ctrlKey) return;
      event.preventDefault();
      zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15);
    }, { passive: false });
    fit(READABLE);
    return { svg, zoom, fit: () => fit(0) };
  }

  function box(svg, n, size, attrs, onClick) {
    const group = el("g", { class: "node",
                            transform: `translate(${n.x - size.width / 2},${n.y - size.height / 2})`,
                            ...attrs }, svg);
    el("rect", { width: size.width, height: size.height, rx: 6 }, group);
    if (onClick) group.addEventListener("click", onClick);
    return group;
  }

  // Every run drawn: runs in columns by depth (a run's column is after those of the runs it
  // reads), each column's runs sorted by job and ref and wrapped into sub-columns of at most
  // ROWS, so that a wide build is a few screens wide rather than thousands of pixels tall.
  const ROWS = 12, GAP = 10, RANK_GAP = 64;

  function gridLayout(runs, edges) {
    const reads = new Map(runs.map((r) => [r.job_run_id, []]));
    for (const [from, to] of edges) reads.get(to).push(from);
    const depth = new Map();
    function depthOf(id) {
      if (!depth.has(id)) {
        depth.set(id, 0);  // guards a cycle, which a plan never has
        depth.set(id, Math.max(-1, ...reads.get(id).map(depthOf)) + 1);
      }
      return depth.get(id);
    }
    const columns = [];
    for (const run of runs) (columns[depthOf(run.job_run_id)] ||= []).push(run);
    const key = (r) => r.job_label + "\u0000" + (r.outputs[0] || "");
    const place = new Map();
    let x = 8, height = 0;
    for (const column of columns.filter(Boolean)) {
      column.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
      const rows = Math.min(column.length, ROWS);
      column.forEach((run, i) => {
        const sub = Math.floor(i / rows), row = i % rows;
        place.set(run.job_run_id, { x: x + sub * (RUN.width + GAP),
                                    y: 8 + row * (RUN.height + GAP) });
      });
      x += Math.ceil(column.length / rows) * (RUN.width + GAP) - GAP + RANK_GAP;
      height = Math.max(height, 8 + rows * (RUN.height + GAP));
    }
    return { place, width: x - RANK_GAP + 8, height };
  }

  // runs: [{job_run_id, job_label, outputs: [ref], inputs: [ref], status}]
  function draw(container, runs, onSelect) {
    const producer = new Map();
    for (const run of runs) for (const ref of run.outputs) producer.set(ref, run.job_run_id);
    const edges = [];
    for (const run of runs) {
      for (const ref of new Set(run.inputs)) {
        const from = producer.get(ref);
        if (from && from !== run.job_run_id) edges.push([from, run.job_run_id]);
      }
    }
    const grid = gridLayout(runs, edges);
    const view = canvas(container, { width: grid.width, height: grid.height }, []);
    const lines = new Map(runs.map((r) => [r.job_run_id, []]));
    for (const [from, to] of edges) {
      const a = grid.place.get(from), b = grid.place.get(to);
      const x1 = a.x + RUN.width, y1 = a.y + RUN.height / 2, x2 = b.x, y2 = b.y + RUN.height / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      const line = el("path", { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
                                class: "edge run-edge" }, view.svg);
      lines.get(from).push(line);
      lines.get(to).push(line);
    }
    const nodes = new Map();
    for (const run of runs) {
      const p = grid.place.get(run.job_run_id);
      const group = box(view.svg, { x: p.x + RUN.width / 2, y: p.y + RUN.height / 2 }, RUN,
                        { "data-run": run.job_run_id,
                          "data-status": run.status || "JOB_SCHEDULED" },
                        onSelect && (() => onSelect(run.job_run_id)));
      el("text", { x: 10, y: 18 }, group).textContent = middle(run.job_label, RUN.chars - 4);
      const first = run.outputs[0] || "";
      const more = run.outputs.length > 1 ? ` +${run.outputs.length - 1}` : "";
      el("text", { x: 10, y: 35, class: "sub" }, group).textContent =
        middle(first, RUN.chars - more.length) + more;
      el("title", {}, group).textContent = `${run.job_label}\n${run.outputs.join("\n")}`;
      nodes.set(run.job_run_id, group);
    }
    return {
      ...view,
      setStatus(id, status) {
        const node = nodes.get(id);
        if (node) node.setAttribute("data-status", status);
        return Boolean(node);
      },
      select(id) {
        for (const [key, node] of nodes) node.classList.toggle("selected", key === id);
        for (const line of view.svg.querySelectorAll(".run-edge.hot")) line.classList.remove("hot");
        for (const line of lines.get(id) || []) line.classList.add("hot");
      },
    };
  }

  // jobs: [{job_label, runs, job_runs: {status: n}}]; edges: [{upstream, downstream}].
  function drawJobs(container, jobs, edges, onSelect) {
    const labels = jobs.map((j) => j.job_label);
    const g = layout(labels, edges.map((e) => [e.upstream, e.downstream]), JOB);
    const view = canvas(container, g.graph(), g.edges().map((e) => g.edge(e).points));
    const nodes = new Map();
    for (const job of jobs) {
      const group = box(view.svg, g.node(job.job_label), JOB,
                        { "data-job": job.job_label }, () => onSelect(job.job_label));
      el("text", { x: 10, y: 18 }, group).textContent = middle(job.job_label, JOB.chars);
      const bar = el("g", { transform: "translate(10,28)" }, group);
      const counts = el("text", { x: 10, y: 62, class: "sub counts" }, group);
      const title = el("title", {}, group);
      nodes.set(job.job_label, { group, bar, counts, title });
    }
    const api = {
      ...view,
      // Shows a job's counts: a bar of its runs by status, and "done / runs".
      update(label, runs, byStatus) {
        const node = nodes.get(label);
        if (!node) return false;
        const width = JOB.width - 20;
        node.bar.replaceChildren();
        el("rect", { width, height: 12, class: "pending" }, node.bar);
        let x = 0;
        for (const status of STATUSES) {
          const n = byStatus[status] || 0;
          if (!n || !runs) continue;
          const w = Math.max(1, (width * n) / runs);
          el("rect", { x, width: w, height: 12, "data-status": status }, node.bar);
          x += w;
        }
        const done = ["JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED", "JOB_SKIPPED"]
          .reduce((sum, s) => sum + (byStatus[s] || 0), 0);
        const failed = byStatus.JOB_FAILED || 0;
        const running = byStatus.JOB_RUNNING || 0;
        node.counts.textContent = `${done.toLocaleString()} / ${runs.toLocaleString()} done` +
          (running ? ` · ${running.toLocaleString()} running` : "") +
          (failed ? ` · ${failed.toLocaleString()} failed` : "");
        node.group.dataset.failed = failed ? "true" : "false";
        for (const status of STATUSES) {
          node.group.dataset[dbLive.short(status)] = String(byStatus[status] || 0);
        }
        node.title.textContent = `${label}: ${runs} runs\n` + STATUSES
          .filter((s) => byStatus[s]).map((s) => `${dbLive.short(s)} ${byStatus[s]}`).join("\n");
        return true;
      },
      select(label) {
        for (const [key, node] of nodes) node.group.classList.toggle("selected", key === label);
      },
    };
    for (const job of jobs) api.update(job.job_label, job.runs, job.job_runs);
    return api;
  }

  // A job_graph's job_runs entry, in the shape draw() takes.
  function fromPlan(run) {
    return {
      job_run_id: run.job_run_id,
      job_label: run.job_label,
      outputs: run.outputs,
      inputs: (run.inputs || []).map((i) => i.partition_ref.str),
      status: "JOB_SCHEDULED",
    };
  }

  return { draw, drawJobs, fromPlan, middle };
})();

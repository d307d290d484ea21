// Draws a job graph (job runs and the partitions between them) with dagre's layout as SVG.
"use strict";
window.dbGraph = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 190, HEIGHT = 46;

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  // runs: [{job_run_id, job_label, outputs: [ref], inputs: [ref], status}]
  function draw(container, runs, onSelect) {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 60, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    const producer = new Map();
    for (const run of runs) {
      g.setNode(run.job_run_id, { width: WIDTH, height: HEIGHT });
      for (const ref of run.outputs) producer.set(ref, run.job_run_id);
    }
    for (const run of runs) {
      for (const ref of run.inputs) {
        const from = producer.get(ref);
        if (from && from !== run.job_run_id) g.setEdge(from, run.job_run_id);
      }
    }
    dagre.layout(g);
    const size = g.graph();
    container.replaceChildren();
    const svg = el("svg", { width: size.width, height: size.height, role: "img",
                            "aria-label": "job graph" }, container);
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                  markerWidth: 7, markerHeight: 7, orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }, marker);
    for (const e of g.edges()) {
      const pts = g.edge(e).points;
      const d = pts.map((p, i) => (i ? "L" : "M") + p.x + "," + p.y).join(" ");
      el("path", { d, class: "edge", "marker-end": "url(#arrow)" }, svg);
    }
    const nodes = new Map();
    for (const run of runs) {
      const n = g.node(run.job_run_id);
      const group = el("g", { class: "node", "data-run": run.job_run_id,
                              "data-status": run.status || "JOB_SCHEDULED",
                              transform: `translate(${n.x - WIDTH / 2},${n.y - HEIGHT / 2})` }, svg);
      el("rect", { width: WIDTH, height: HEIGHT, rx: 6 }, group);
      el("text", { x: 10, y: 19 }, group).textContent = clip(run.job_label, 26);
      const sub = run.outputs.length > 1 ? `${run.outputs[0]} +${run.outputs.length - 1}`
                                         : (run.outputs[0] || "");
      el("text", { x: 10, y: 36, class: "sub" }, group).textContent = clip(sub, 30);
      el("title", {}, group).textContent = `${run.job_label}\n${run.outputs.join("\n")}`;
      if (onSelect) group.addEventListener("click", () => onSelect(run.job_run_id));
      nodes.set(run.job_run_id, group);
    }
    return {
      setStatus(id, status) {
        const node = nodes.get(id);
        if (node) node.setAttribute("data-status", status);
        return Boolean(node);
      },
      select(id) {
        for (const [key, node] of nodes) node.classList.toggle("selected", key === id);
      },
    };
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

  return { draw, fromPlan };
})();

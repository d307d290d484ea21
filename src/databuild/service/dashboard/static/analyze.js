"use strict";
(() => {
  const data = document.getElementById("analysis");
  if (!data) return;
  const plan = JSON.parse(data.textContent);
  dbGraph.draw(document.getElementById("graph"), plan.job_runs.map(dbGraph.fromPlan));
})();

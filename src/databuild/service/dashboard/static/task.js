// The run page: the run's log, followed live while it runs. When a run that was running at
// load has ended, the page is loaded again once, to show its end (status, exit code, times).
"use strict";
(() => {
  const root = document.getElementById("task");
  const log = document.getElementById("log");
  const source = dbLive.followLog(root.dataset.task, log, 20000);
  if (root.dataset.final !== "true") {
    source.addEventListener("log_end", () => location.reload());
  }
})();

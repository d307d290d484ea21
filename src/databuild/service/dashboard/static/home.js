// Home: the first active builds' rows follow their progress streams until the builds end.
// Only a few: each stream holds one of the browser's six connections to the service.
"use strict";
(() => {
  const LIVE_ROWS = 3;
  const rows = [...document.querySelectorAll("#active tr[data-build]")].slice(0, LIVE_ROWS);
  for (const row of rows) {
    const statuses = new Map();
    const counts = row.querySelector(".counts");
    function showCounts() {
      const tally = new Map();
      for (const s of statuses.values()) tally.set(s, (tally.get(s) || 0) + 1);
      counts.replaceChildren();
      for (const [s, n] of tally) counts.append(dbLive.badge(s), "\u00a0" + n + " ");
    }
    const setStatus = (event) => {
      row.querySelector(".build-status").replaceChildren(dbLive.badge(event.status));
    };
    dbLive.follow(row.dataset.build, {
      job(event) { statuses.set(event.job_run_id, event.status); showCounts(); },
      build_request: setStatus,
      finished: setStatus,
    });
  }
})();

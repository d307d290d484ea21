// Home: each active build's row follows its progress stream until the build ends.
"use strict";
(() => {
  for (const row of document.querySelectorAll("#active tr[data-build]")) {
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

// Says so on the page when the service has stopped. Asking /ui/alive does not count as
// activity, so an open tab never keeps an idle service running (SPEC §5.2, §8).
"use strict";
window.dbAlive = (() => {
  const PERIOD_MS = 10000;
  let stopped = false;
  let timer = null;
  function check() {
    if (stopped) return Promise.resolve(false);
    return fetch("/ui/alive", { cache: "no-store" })
      .then((response) => response.ok)
      .catch(() => false)
      .then((ok) => {
        if (!ok) {
          stopped = true;
          clearInterval(timer);
          document.getElementById("stopped").hidden = false;
        }
        return ok;
      });
  }
  timer = setInterval(check, PERIOD_MS);
  return { check, get stopped() { return stopped; } };
})();

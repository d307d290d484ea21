// Following a build's progress stream. The browser's EventSource reconnects by itself after a
// dropped connection, sending Last-Event-ID, and the service resumes after that event; events
// are also skipped here by index, so no state is lost or applied twice.
"use strict";
window.dbLive = (() => {
  function short(status) {
    return (status || "").replace(/^(BUILD_REQUEST_|JOB_|PARTITION_)/, "").toLowerCase();
  }

  function badge(status) {
    const span = document.createElement("span");
    span.className = "status s-" + short(status);
    span.textContent = short(status);
    return span;
  }

  // The event types come from the service (the page's body), which has them from the event
  // log's own list: none is spelled out here.
  const EVENT_TYPES = document.body.dataset.eventTypes.split(" ");
  const BUILD_FINISHED = document.body.dataset.buildFinished;

  // A duration in seconds, briefly (as the pages' `seconds` filter writes it).
  function seconds(value) {
    if (value === null || value === undefined) return "—";
    if (value < 60) return value.toFixed(2) + " s";
    if (value < 3600) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  // handlers: one per event type (job_graph, job, build_request, partition, delegation), and
  // finished; each optional.
  // since: the index of the last event already accounted for (0: from the start).
  // The index of the last event applied is kept in element.dataset.lastEvent.
  function follow(buildId, handlers, element, since) {
    let lastIdx = since || 0;
    const query = lastIdx ? "?since=" + lastIdx : "";
    const source = new EventSource(
      "/ui/builds/" + encodeURIComponent(buildId) + "/events" + query);
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        const idx = Number(message.lastEventId);
        if (idx <= lastIdx) return;
        lastIdx = idx;
        if (element) element.dataset.lastEvent = idx;
        if (handlers[type]) handlers[type](JSON.parse(message.data));
      });
    }
    source.addEventListener(BUILD_FINISHED, (message) => {
      source.close();  // a finished build's stream would only replay again
      if (handlers.finished) handlers.finished(JSON.parse(message.data));
    });
    source.onerror = () => {
      window.dbAlive.check().then((alive) => { if (!alive) source.close(); });
    };
    return source;
  }

  // Follows a job run's log into the element `log` (a <pre>) until the run has ended; keeps
  // at most `keep` lines. Returns the EventSource (close it to stop).
  function followLog(runId, log, keep) {
    log.replaceChildren();
    log.dataset.lines = "0";
    const source = new EventSource("/ui/tasks/" + encodeURIComponent(runId) + "/logs");
    source.addEventListener("log_line", (message) => {
      const line = JSON.parse(message.data);
      const span = document.createElement("span");
      span.className = line.stream;
      span.textContent = line.text + "\n";
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(span);
      while (log.childElementCount > (keep || 5000)) log.firstElementChild.remove();
      log.dataset.lines = String(Number(log.dataset.lines) + 1);
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("log_end", () => {
      source.close();
      if (!log.childElementCount) log.textContent = "(no output)";
      log.dataset.ended = "true";
    });
    source.onerror = () => {
      window.dbAlive.check().then((alive) => { if (!alive) source.close(); });
    };
    return source;
  }

  return { follow, followLog, badge, short, seconds };
})();

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

  // handlers: one per event type (job_graph, job, build_request, partition, delegation), and
  // finished; each optional. The index of the last event applied is kept in
  // element.dataset.lastEvent.
  function follow(buildId, handlers, element) {
    let lastIdx = 0;
    const source = new EventSource("/ui/builds/" + encodeURIComponent(buildId) + "/events");
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

  return { follow, badge, short };
})();

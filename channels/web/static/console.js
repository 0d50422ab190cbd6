// The agent console: refetch the queue or the ticket timeline when the server's change marker moves.
(function () {
  "use strict";
  const ticket = document.getElementById("ticket");
  const queue = document.getElementById("queue");
  let streamUrl, target, fragmentUrl;
  if (ticket) {
    const number = encodeURIComponent(ticket.dataset.number);
    streamUrl = "/console/tickets/" + number + "/stream";
    fragmentUrl = "/console/tickets/" + number + "/timeline";
    target = document.getElementById("timeline");
  } else if (queue) {
    streamUrl = "/console/stream";
    fragmentUrl = "/console/queue?queue=" + encodeURIComponent(queue.dataset.queue);
    target = queue;
  } else {
    return;
  }
  // The first marker describes the page as rendered; a different one later means "changed".
  let seen = null;

  async function refresh() {
    const response = await fetch(fragmentUrl, { headers: { Accept: "text/html" } });
    if (response.ok) {
      target.innerHTML = await response.text();
      target.dataset.refreshed = String(Number(target.dataset.refreshed || 0) + 1);
    }
  }

  function listen() {
    const source = new EventSource(streamUrl);
    source.addEventListener("update", (event) => {
      const marker = JSON.stringify(JSON.parse(event.data).marker);
      if (seen !== null && marker !== seen) refresh();
      seen = marker;
    });
    source.onerror = () => {
      // Streams end every few seconds by design; reconnecting compares markers again.
      source.close();
      setTimeout(listen, 1000);
    };
  }
  listen();
})();

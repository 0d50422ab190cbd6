// The portal chat: send with fetch, receive with server-sent events. Without
// JavaScript the forms post normally and the page reloads.
(function () {
  "use strict";
  const list = document.getElementById("messages");
  const form = document.getElementById("chat-form");
  if (!list || !form) return;
  const csrf = form.querySelector("input[name=csrf]").value;
  const template = document.getElementById("message-template");
  let last = Number(list.dataset.last || 0);

  function newId() {
    return (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);
  }

  async function send(text, action) {
    const body = { text: text, client_id: newId() };
    if (action) body.action = action;
    // Retried with the same client_id, so a lost response never sends the message twice.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const response = await fetch("/portal/messages", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(body),
        });
        if (response.ok) return true;
        const problem = await response.json().catch(() => ({ error: "Could not send the message." }));
        if (response.status < 500 && response.status !== 429) { showError(problem.error); return false; }
      } catch (e) { /* network trouble: retry */ }
      await new Promise((resolve) => setTimeout(resolve, 1000 * (attempt + 1)));
    }
    showError("Could not send the message. Check your connection and try again.");
    return false;
  }

  function showError(text) {
    const li = document.createElement("li");
    li.className = "message error";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = text;
    li.appendChild(bubble);
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    if (m.ticket_number) noteTicket(m.ticket_number);
  }

  // A reply that names a ticket (e.g. the bot just opened one): list it under "My open tickets".
  function noteTicket(number) {
    const tickets = document.getElementById("open-tickets");
    if (!tickets || tickets.querySelector('[data-number="' + CSS.escape(number) + '"]')) return;
    const item = document.createElement("li");
    item.dataset.number = number;
    const link = document.createElement("a");
    link.href = "/tickets/" + encodeURIComponent(number);
    link.textContent = number;
    item.appendChild(link);
    tickets.appendChild(item);
    const none = document.getElementById("no-open-tickets");
    if (none) none.remove();
  }

  function render(m) {
    if (m.id <= last || list.querySelector('[data-id="' + m.id + '"]')) return;
    last = m.id;
    const hint = list.querySelector(".hint");
    if (hint) hint.remove();
    const li = template.content.firstElementChild.cloneNode(true);
    li.dataset.id = m.id;
    li.classList.add(m.mine ? "mine" : "bot", "kind-" + m.kind);
    li.querySelector(".author").textContent = m.author;
    li.querySelector("time").textContent = new Date(m.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.querySelector(".bubble").textContent = m.text;
    const citations = li.querySelector(".citations");
    (m.citations || []).forEach((c) => {
      const a = document.createElement("a");
      a.href = "/kb/" + encodeURIComponent(c.article_id);
      a.textContent = c.title;
      citations.appendChild(a);
    });
    const buttons = li.querySelector(".buttons");
    (m.buttons || []).forEach((b) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = b.label;
      button.dataset.action = b.action;
      button.addEventListener("click", () => {
        buttons.querySelectorAll("button").forEach((other) => { other.disabled = true; });
        send(b.label, b.action);
      });
      buttons.appendChild(button);
    });
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    if (m.ticket_number) noteTicket(m.ticket_number);
  }

  // A reply that names a ticket (e.g. the bot just opened one): list it under "My open tickets".
  function noteTicket(number) {
    const tickets = document.getElementById("open-tickets");
    if (!tickets || tickets.querySelector('[data-number="' + CSS.escape(number) + '"]')) return;
    const item = document.createElement("li");
    item.dataset.number = number;
    const link = document.createElement("a");
    link.href = "/tickets/" + encodeURIComponent(number);
    link.textContent = number;
    item.appendChild(link);
    tickets.appendChild(item);
    const none = document.getElementById("no-open-tickets");
    if (none) none.remove();
  }

  // Buttons rendered by the server: send them with fetch too.
  list.querySelectorAll("form.chat-button").forEach((buttonForm) => {
    buttonForm.addEventListener("submit", (event) => {
      event.preventDefault();
      buttonForm.querySelector("button").disabled = true;
      send(buttonForm.elements.text.value, buttonForm.elements.action.value);
    });
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = form.elements.text;
    const text = box.value.trim();
    if (!text) return;
    box.disabled = true;
    if (await send(text, null)) box.value = "";
    box.disabled = false;
    box.focus();
  });
  form.elements.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });

  function listen() {
    const source = new EventSource("/portal/stream?after=" + last);
    source.addEventListener("update", (event) => {
      JSON.parse(event.data).messages.forEach(render);
    });
    source.onerror = () => {
      // The stream ends every few seconds by design; reconnect from the newest message shown.
      source.close();
      setTimeout(listen, 1000);
    };
  }
  list.scrollTop = list.scrollHeight;
  listen();
  form.dataset.ready = "1";
})();

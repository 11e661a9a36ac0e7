/* The admin console's behaviour: copy buttons beside call ids, and a live call page.
   A file of its own (the CSP runs no inline script); no library, no build step. */
"use strict";

(() => {
  const french = (document.documentElement.lang || "").startsWith("fr");
  const COPY = french ? "Copier" : "Copy";
  const COPIED = french ? "Copié" : "Copied";

  /* Each [data-copy] gets a button that copies its full value (ids are shown shortened). */
  function addCopyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach((element) => {
      const anchor = element.closest("a") || element;
      if (anchor.nextElementSibling && anchor.nextElementSibling.classList.contains("copy-button")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      // Two overlapping sheets, drawn rather than a glyph that some system fonts lack.
      button.innerHTML = '<svg viewBox="0 0 16 16" width="12" height="12" aria-hidden="true" focusable="false"><rect x="5" y="5" width="9" height="9" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.5"/><path d="M3 11V3.5C3 2.7 3.7 2 4.5 2H11" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>';
      button.title = COPY + " " + element.dataset.copy;
      button.setAttribute("aria-label", button.title);
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        const done = () => {
          button.dataset.copied = "";
          button.title = COPIED;
          setTimeout(() => { delete button.dataset.copied; button.title = COPY + " " + element.dataset.copy; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(element.dataset.copy).then(done, () => {});
        } else {
          // Plain http (a test server, a LAN address): the clipboard API is not offered there.
          const field = document.createElement("textarea");
          field.value = element.dataset.copy;
          document.body.append(field);
          field.select();
          document.execCommand("copy");
          field.remove();
          done();
        }
      });
      anchor.after(button);
    });
  }

  /* A live call's page follows the call's own feed (the staff session opens it) and fetches its
     changing parts again after each push, a few at a time; it stops once the call has ended. */
  function followCall(console_) {
    const state = document.getElementById("live-state");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/ws/realtime/calls/${encodeURIComponent(console_.dataset.callId)}`;
    let socket = null;
    let timer = null;
    let stopped = false;
    let retries = 0;

    const setState = (value) => {
      if (!state) return;
      state.dataset.state = value;
      state.textContent = value === "live" ? state.dataset.labelLive : state.dataset.labelOff;
    };

    async function refresh() {
      timer = null;
      const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      document.querySelectorAll("[data-live-part]").forEach((part) => {
        const replacement = fresh.getElementById(part.id);
        if (!replacement) return;
        // Keep the events someone has unfolded open.
        const open = new Set([...part.querySelectorAll("details[open]")].map((d) => d.closest("li")?.dataset.index));
        part.replaceWith(replacement);
        replacement.querySelectorAll("li[data-index]").forEach((li) => { if (open.has(li.dataset.index)) li.querySelector("details")?.setAttribute("open", ""); });
        addCopyButtons(replacement);
      });
      const freshConsole = fresh.getElementById("call-console");
      if (freshConsole && !freshConsole.hasAttribute("data-live-call")) stop();
    }

    // A change of the call itself (answered, ended, transferred) shows at once; a monitored call's
    // sideband events, many a second, are gathered into one fetch a second.
    function schedule(delay) {
      if (timer === null) timer = setTimeout(() => { refresh().catch(() => {}); }, delay);
    }

    function onPush(message) {
      let type = "";
      try { type = JSON.parse(message.data).event?.event_type || ""; } catch (error) { /* not JSON: refresh anyway */ }
      if (type.startsWith("call.") && timer !== null) { clearTimeout(timer); timer = null; }
      schedule(type.startsWith("call.") ? 100 : 1000);
    }

    function stop() {
      stopped = true;
      console_.removeAttribute("data-live-call");
      if (state) state.remove();
      if (socket) socket.close();
    }

    function connect() {
      socket = new WebSocket(url);
      // On (re)connecting, catch up with what happened while the socket was not there.
      socket.addEventListener("open", () => { retries = 0; setState("live"); schedule(100); });
      socket.addEventListener("message", onPush);
      socket.addEventListener("close", () => {
        if (stopped) return;
        setState("off");
        // The server restarted or the network blinked: try again, more slowly each time.
        if (retries < 8) setTimeout(connect, Math.min(1000 * 2 ** retries++, 15000));
      });
    }
    connect();
    // The running call's duration ticks between pushes (m:ss, as the server writes it).
    const tick = setInterval(() => {
      const shown = document.querySelector("#call-duration[data-started]");
      if (stopped || !shown) { clearInterval(tick); return; }
      const seconds = Math.max(0, Math.round(Date.now() / 1000 - Number(shown.dataset.started)));
      const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = String(seconds % 60).padStart(2, "0");
      shown.textContent = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
    }, 1000);
  }

  function start() {
    addCopyButtons(document);
    const console_ = document.getElementById("call-console");
    if (console_ && console_.hasAttribute("data-live-call")) followCall(console_);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

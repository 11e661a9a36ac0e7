/* The demo page: one WebRTC call from this browser, and every call live.
 *
 * Sources of truth: the REST API (/api/realtime/...). The WebSocket feeds only tell the page what
 * changed; on every (re)connection the page re-fetches, so it never shows stale state after a gap.
 * Strings go through Django's JavaScript catalog (gettext/interpolate), served by this server.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("realtime-config").textContent);
  // Named `gettext` so that `makemessages -d djangojs` finds the strings.
  const gettext = window.gettext || ((text) => text);
  // Short words in a context of their own, so other pages' catalogues never collide with them.
  const pgettext = window.pgettext || ((context, text) => text);
  const fmt = (text, values) => (window.interpolate ? window.interpolate(text, values) : text.replace(/%s/g, () => values.shift()));

  const STATUS_LABELS = { pending: gettext("Pending"), active: gettext("Active"), ended: gettext("Ended"), failed: gettext("Failed") };
  // Terminal states never go back: a push older than what was fetched must not regress a row.
  const STATUS_RANK = { pending: 0, active: 1, ended: 2, failed: 2 };
  const LIST_LIMIT = 50;
  // The browser's connection, ICE and data channel states, and the page's own, as shown.
  const STATE_LABELS = {
    idle: pgettext("demo page", "idle"),
    starting: pgettext("demo page", "starting"),
    new: pgettext("demo page", "new"),
    connecting: pgettext("demo page", "connecting"),
    connected: pgettext("demo page", "connected"),
    disconnected: pgettext("demo page", "disconnected"),
    failed: pgettext("demo page", "failed"),
    closed: pgettext("demo page", "closed"),
    checking: pgettext("demo page", "checking"),
    completed: pgettext("demo page", "completed"),
    open: pgettext("demo page", "open"),
    closing: pgettext("demo page", "closing"),
  };
  // Where a call comes from, as the statistics and the list name it.
  const SOURCE_LABELS = { webrtc: pgettext("demo page", "WebRTC"), sip: pgettext("demo page", "Phone (SIP)") };
  // The form as it was before a language switch reloads the page (restored once, then dropped).
  const FORM_KEY = "realtime-demo-form";
  const FORM_FIELDS = ["f-model", "f-voice", "f-modalities", "f-max-tokens", "f-temperature", "f-instructions", "f-transcribe", "status-filter"];

  // --- HTTP ------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  function csrfToken() {
    // The cookie is the fresh value; the template's meta tag covers CSRF_COOKIE_HTTPONLY setups.
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : document.querySelector('meta[name="csrf-token"]').content;
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json", "X-CSRFToken": csrfToken() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(config.apiBase + path, init);
    } catch (error) {
      throw new ApiError(0, "network_error", gettext("The server could not be reached."));
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      // Not JSON (a proxy's error page, say): reported below with the HTTP status.
    }
    if (!response.ok || !data || data.success === false) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || fmt(gettext("The server answered %s."), [response.status]), error.details);
    }
    return data;
  }

  // `kind` names the failure for scripts and tests (the message is translated): "microphone",
  // "sdp", "upstream", "session", "throttled", "network", "answer", "hangup", "ended-elsewhere", or
  // the API's error code.
  function showError(element, message, kind) {
    element.textContent = message;
    element.hidden = !message;
    element.dataset.error = message ? kind || "" : "";
  }

  // --- WebSocket with backoff ------------------------------------------------------------------

  function liveSocket(path, { onOpen, onMessage, onState }) {
    let socket = null;
    let attempt = 0;
    let timer = null;
    let stopped = false;
    const connect = () => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + path);
      onState("connecting");
      socket.onopen = () => {
        attempt = 0;
        onState("live");
        onOpen();
      };
      socket.onmessage = (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        onMessage(data);
      };
      socket.onclose = () => {
        socket = null;
        if (stopped) return;
        // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
        const delay = Math.min(10000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
        attempt += 1;
        onState("reconnecting", delay);
        timer = setTimeout(connect, delay);
      };
    };
    connect();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
        if (socket) socket.close();
      },
    };
  }

  function showFeedState(element, state, delay) {
    element.dataset.state = state;
    element.className = `pill ${state === "live" ? "pill-ok" : state === "reconnecting" ? "pill-warn" : "pill-muted"}`;
    element.textContent =
      state === "live" ? gettext("Live") : state === "reconnecting" ? fmt(gettext("Reconnecting in %s s…"), [Math.ceil(delay / 1000)]) : gettext("Connecting…");
  }

  // --- formatting ------------------------------------------------------------------------------

  // Times are the viewer's local time, in the page's language; the page names that time zone.
  const LANGUAGE = document.documentElement.lang || undefined;
  const timeOf = (seconds) => new Date(seconds * 1000).toLocaleTimeString(LANGUAGE);
  const dateTimeOf = (seconds) => new Date(seconds * 1000).toLocaleString(LANGUAGE, { timeZoneName: "short" });

  function showTimeZone() {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    const minutes = -new Date().getTimezoneOffset();
    const offset = `UTC${minutes < 0 ? "−" : "+"}${String(Math.floor(Math.abs(minutes) / 60)).padStart(2, "0")}:${String(Math.abs(minutes) % 60).padStart(2, "0")}`;
    const label = $("local-time-zone");
    label.dataset.timeZone = zone;
    label.textContent = fmt(gettext("Times in your local time: %s"), [zone ? `${zone} (${offset})` : offset]);
  }

  // A call id in full for copying, whatever is shown: the admin's search wants the whole id.
  function copyButton(button, text) {
    button.dataset.copy = text;
    button.title = fmt(gettext("Copy %s"), [text]);
    button.setAttribute("aria-label", button.title);
  }

  async function copyText(button) {
    const text = button.dataset.copy;
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      // No clipboard access (an insecure origin, a refused permission): select it for Ctrl+C.
      window.prompt(gettext("Copy the call id:"), text);
      return;
    }
    const shown = button.textContent;
    button.textContent = button.classList.contains("icon") ? "✓" : pgettext("demo page", "Copied");
    button.dataset.copied = "true";
    setTimeout(() => {
      button.textContent = shown;
      delete button.dataset.copied;
    }, 1500);
  }

  // In the list, an icon (its label says what it copies): the columns must fit at 1366 px.
  function newCopyButton(text) {
    const button = element("button", { type: "button", className: "link copy icon" });
    copyButton(button, text);
    return button;
  }
  const durationOf = (call) => (call.duration_seconds === null || call.duration_seconds === undefined ? "—" : `${call.duration_seconds} s`);
  const countsOf = (counts, labels) =>
    Object.entries(counts || {})
      .sort((a, b) => b[1] - a[1])
      .map(([key, n]) => `${(labels && labels[key]) || key}: ${n}`)
      .join(" · ") || "—";

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // --- statistics ------------------------------------------------------------------------------

  function renderStats(stats) {
    for (const key of ["total_calls", "active_calls", "ended_calls", "failed_calls", "avg_duration_seconds", "total_events"]) {
      const node = $(`s-${key}`);
      if (node && stats[key] !== undefined) node.textContent = stats[key];
    }
    $("s-by-model").textContent = countsOf(stats.calls_by_model);
    $("s-by-voice").textContent = countsOf(stats.calls_by_voice);
    $("s-by-source").textContent = countsOf(stats.calls_by_source || {}, SOURCE_LABELS);
  }

  async function loadStats() {
    try {
      renderStats((await api("GET", "/stats")).stats);
    } catch (error) {
      showError($("calls-error"), error.message);
    }
  }

  // --- calls list ------------------------------------------------------------------------------

  const list = { calls: new Map(), count: 0, loading: null, buffered: [] };

  function statusPill(status) {
    return element("span", { className: `pill status-${status}` }, STATUS_LABELS[status] || status);
  }

  function renderCalls() {
    const body = $("calls-body");
    const calls = [...list.calls.values()].sort((a, b) => b.created_at - a.created_at).slice(0, LIST_LIMIT);
    body.replaceChildren(
      ...calls.map((call) => {
        const live = call.status === "pending" || call.status === "active";
        const actions = element("td", { className: "row-actions" });
        const show = element("button", { type: "button", className: "link" }, gettext("Events"));
        show.addEventListener("click", () => selectCall(call.call_id));
        actions.append(show);
        if (live && config.canEnd) {
          const end = element("button", { type: "button", className: "link danger-text", dataset: { action: "end" } }, gettext("End"));
          end.addEventListener("click", () => endListedCall(call.call_id));
          actions.append(end);
        }
        // Phone calls: who called which number (untrusted text from SIP headers, shown as text).
        const caller = call.sip
          ? element("td", { className: "sip-caller", title: fmt(gettext("called %s"), [call.sip.called || "?"]) }, `☎ ${call.sip.caller || pgettext("demo page", "unknown")}`)
          : element("td", { className: "muted" }, SOURCE_LABELS[call.source] || call.source || SOURCE_LABELS.webrtc);
        const row = element(
          "tr",
          { dataset: { callId: call.call_id, status: call.status, source: call.source || "webrtc" } },
          element("td", { className: "call-id", title: call.call_id }, element("code", {}, call.call_id.slice(0, 11) + "…"), newCopyButton(call.call_id)),
          element("td", {}, statusPill(call.status)),
          caller,
          element("td", {}, call.model, element("div", { className: "muted" }, call.voice)),
          element("td", { className: "started", title: dateTimeOf(call.created_at) }, timeOf(call.created_at)),
          element("td", {}, durationOf(call)),
          actions,
        );
        if (call.call_id === selected.id) row.classList.add("selected");
        return row;
      }),
    );
    $("calls-empty").hidden = calls.length > 0;
    $("calls-empty").textContent = $("status-filter").value ? gettext("No calls match this filter.") : gettext("No calls yet.");
    $("calls-count").textContent = `(${list.count})`;
  }

  async function loadCalls() {
    const status = $("status-filter").value;
    const query = `?limit=${LIST_LIMIT}${status ? `&status=${encodeURIComponent(status)}` : ""}`;
    // Pushes that arrive while the list is in flight are applied after it, not lost under it.
    list.loading = api("GET", `/calls${query}`);
    try {
      const data = await list.loading;
      list.calls = new Map(data.data.map((call) => [call.call_id, call]));
      list.count = data.count;
      showError($("calls-error"), "");
    } catch (error) {
      showError($("calls-error"), error.message);
    } finally {
      list.loading = null;
      const buffered = list.buffered.splice(0);
      buffered.forEach(applyCall);
      renderCalls();
    }
  }

  function applyCall(call) {
    if (list.loading) {
      list.buffered.push(call);
      return;
    }
    const filter = $("status-filter").value;
    const known = list.calls.get(call.call_id);
    if (known && STATUS_RANK[call.status] < STATUS_RANK[known.status]) return;
    if (filter && call.status !== filter) {
      if (known) {
        list.calls.delete(call.call_id);
        list.count -= 1;
      }
    } else {
      if (!known) list.count += 1;
      list.calls.set(call.call_id, call);
    }
    renderCalls();
  }

  async function endListedCall(callId) {
    if (current && current.id === callId) return endCall();
    try {
      await api("DELETE", `/calls/${encodeURIComponent(callId)}`);
    } catch (error) {
      showError($("calls-error"), error.message);
    }
  }

  // --- events of one call ----------------------------------------------------------------------

  let selected = { id: null, socket: null, events: [], seen: new Set() };

  function renderEvents() {
    const items = [...selected.events].sort((a, b) => a.at - b.at || a.seq - b.seq);
    $("events-list").replaceChildren(
      ...items.map((event) => {
        const details = element("details", {}, element("summary", {}, event.summary), element("pre", {}, JSON.stringify(event.data, null, 2)));
        return element(
          "li",
          { dataset: { source: event.source, eventType: event.type } },
          element("time", { datetime: new Date(event.at).toISOString(), title: new Date(event.at).toLocaleString(LANGUAGE, { timeZoneName: "short" }) }, new Date(event.at).toLocaleTimeString(LANGUAGE)),
          element("span", { className: `source source-${event.source}` }, event.source === "server" ? gettext("recorded") : gettext("data channel")),
          element("strong", {}, event.type),
          details,
        );
      }),
    );
    $("events-empty").hidden = items.length > 0;
    const box = $("events-list");
    box.scrollTop = box.scrollHeight;
  }

  let sequence = 0;

  function addServerEvent(event) {
    if (event.call_id !== selected.id || selected.seen.has(event.id)) return;
    selected.seen.add(event.id);
    const summary = event.actor ? fmt(gettext("by %s"), [event.actor]) : "";
    selected.events.push({ at: event.timestamp * 1000, seq: event.id, source: "server", type: event.event_type, summary, data: event.event_data });
    renderEvents();
  }

  function addChannelEvent(event) {
    if (!current || current.id !== selected.id) return;
    sequence += 1;
    const summary = event.event_id || "";
    selected.events.push({ at: Date.now(), seq: 1e12 + sequence, source: "channel", type: event.type || "?", summary, data: event });
    renderEvents();
  }

  async function loadEvents(callId) {
    try {
      const data = await api("GET", `/calls/${encodeURIComponent(callId)}/events?limit=500`);
      if (selected.id === callId) {
        data.data.forEach(addServerEvent);
        showError($("events-error"), "");
      }
    } catch (error) {
      if (selected.id === callId) showError($("events-error"), error.message);
    }
  }

  function selectCall(callId) {
    if (selected.id === callId) return;
    if (selected.socket) selected.socket.stop();
    selected = { id: callId, socket: null, events: [], seen: new Set() };
    $("events-call").textContent = callId;
    $("events-feed").hidden = false;
    if (current && current.id === callId) current.channelEvents.forEach((event) => addChannelEvent(event));
    renderEvents();
    renderCalls();
    selected.socket = liveSocket(`${config.feedPath}/${encodeURIComponent(callId)}`, {
      onOpen: () => loadEvents(callId),
      onMessage: (message) => message.type === "call.event" && addServerEvent(message.event),
      onState: (state, delay) => showFeedState($("events-feed"), state, delay),
    });
  }

  // --- the call made from this page ------------------------------------------------------------

  let current = null;

  // Its words, from its data channel: the caller's once transcribed (when the form asked for it),
  // the assistant's once each response is done. One line per item, in the order they complete.
  const TRANSCRIPT_EVENTS = {
    "conversation.item.input_audio_transcription.completed": ["user", "transcript"],
    "response.output_audio_transcript.done": ["assistant", "transcript"],
    "response.output_text.done": ["assistant", "text"],
  };

  function showTranscript(lines) {
    $("transcript").replaceChildren(
      ...lines.map(({ role, text }) =>
        element(
          "li",
          { dataset: { role } },
          element("span", { className: "who" }, role === "user" ? pgettext("demo page", "You") : pgettext("demo page", "Assistant")),
          element("span", { className: "text" }, text),
        ),
      ),
    );
    $("transcript-empty").hidden = lines.length > 0;
  }

  function addTranscriptLine(call, event) {
    const [role, key] = TRANSCRIPT_EVENTS[event.type] || [];
    if (!role || typeof event[key] !== "string" || !event[key].trim()) return;
    call.transcript.push({ role, text: event[key] });
    if (current === call) showTranscript(call.transcript);
  }

  function setConnection(state) {
    const pill = $("c-connection");
    pill.dataset.state = state;
    pill.textContent = STATE_LABELS[state] || state;
    pill.className = `pill ${state === "connected" ? "pill-ok" : ["failed", "closed", "disconnected"].includes(state) ? "pill-bad" : "pill-muted"}`;
  }

  function sessionFromForm() {
    const session = {
      model: $("f-model").value,
      modalities: $("f-modalities").value.split(","),
      voice: $("f-voice").value,
      temperature: Number($("f-temperature").value),
    };
    const instructions = $("f-instructions").value.trim();
    if (instructions) session.instructions = instructions;
    const maxTokens = $("f-max-tokens").value;
    if (maxTokens) session.max_response_output_tokens = Number(maxTokens);
    // The caller's words, for the call page and the events below (off: only the assistant's).
    if ($("f-transcribe").checked) session.input_audio_transcription = { model: config.transcriptionModel };
    return session;
  }

  // [message, kind] for a refused POST /calls, naming where it failed.
  function describeCreateError(error) {
    const details = error.details || {};
    if (error.status === 0) return [error.message, "network"];
    if (error.code === "invalid_sdp" || details.field === "sdp" || details.upstream_code === "invalid_offer")
      return [fmt(gettext("SDP offer rejected: %s"), [error.message]), "sdp"];
    // The API's message already says that OpenAI (or the engine standing in for it) refused.
    if (error.status === 502 || error.status === 504) return [error.message, "upstream"];
    if (error.status === 429) return [fmt(gettext("Too many calls, try again later: %s"), [error.message]), "throttled"];
    if (error.status === 400 && details.field) return [fmt(gettext("Invalid session: %s"), [error.message]), "session"];
    return [error.message, error.code];
  }

  function waitForIceGathering(pc, timeoutMs) {
    // The offer is sent once (no trickle), so it must carry the candidates.
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState !== "complete") return;
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  async function startCall(event) {
    event.preventDefault();
    if (current) return;
    showError($("call-error"), "");
    $("start-call").disabled = true;
    setConnection("starting");

    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      showError($("call-error"), fmt(gettext("Microphone refused: %s"), [error.message || error.name]), "microphone");
      setConnection("idle");
      $("start-call").disabled = false;
      return;
    }

    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    const channel = pc.createDataChannel("oai-events");
    const call = { id: null, pc, stream, channel, channelEvents: [], transcript: [], poller: null, ending: false };
    showTranscript([]);
    current = call;
    window.realtimeDemo = { pc }; // for people debugging from the console (and the browser tests)
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));

    pc.ontrack = (trackEvent) => {
      const audio = $("remote-audio");
      audio.srcObject = trackEvent.streams[0] || new MediaStream([trackEvent.track]);
      audio.play().catch(() => {
        // Autoplay may wait for a click; the controls stay visible for that.
      });
    };
    pc.onconnectionstatechange = () => {
      if (current === call) setConnection(pc.connectionState);
    };
    pc.oniceconnectionstatechange = () => {
      if (current === call) $("c-ice").textContent = STATE_LABELS[pc.iceConnectionState] || pc.iceConnectionState;
    };
    channel.onopen = channel.onclose = () => {
      if (current === call) $("c-channel").textContent = STATE_LABELS[channel.readyState] || channel.readyState;
    };
    channel.onmessage = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch (error) {
        data = { type: "?", raw: String(message.data) };
      }
      call.channelEvents.push(data);
      addTranscriptLine(call, data);
      if (current === call) addChannelEvent(data);
    };

    let created;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, 3000);
      created = await api("POST", "/calls", { sdp: pc.localDescription.sdp, session: sessionFromForm() });
    } catch (error) {
      if (error instanceof ApiError) showError($("call-error"), ...describeCreateError(error));
      else showError($("call-error"), error.message, "webrtc");
      teardown(call, "failed");
      return;
    }

    call.id = created.call_id;
    $("c-call-id").textContent = created.call_id;
    copyButton($("c-call-copy"), created.call_id);
    $("c-call-copy").hidden = false;
    $("end-call").disabled = !config.canEnd;
    selectCall(created.call_id);
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: created.sdp_answer });
    } catch (error) {
      showError($("call-error"), fmt(gettext("The SDP answer could not be applied: %s"), [error.message]), "answer");
      await endCall();
      return;
    }
    call.poller = setInterval(() => pollAudio(call), 500);
  }

  async function pollAudio(call) {
    let bytes = 0;
    const report = await call.pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && (stat.kind || stat.mediaType) === "audio") bytes += stat.bytesReceived || 0;
    });
    if (current === call) {
      $("c-bytes").textContent = bytes.toLocaleString();
      $("c-bytes").dataset.bytes = String(bytes);
    }
  }

  function teardown(call, state) {
    clearInterval(call.poller);
    call.pc.close();
    call.stream.getTracks().forEach((track) => track.stop());
    if (current === call) current = null;
    setConnection(state);
    // The player and the connection facts stop with the call, rather than showing its last moment.
    const audio = $("remote-audio");
    audio.pause();
    audio.srcObject = null;
    $("c-ice").textContent = call.pc.iceConnectionState === "new" ? "—" : STATE_LABELS.closed;
    $("c-channel").textContent = "—";
    $("start-call").disabled = false;
    $("end-call").disabled = true;
  }

  async function endCall() {
    const call = current;
    if (!call || call.ending) return;
    call.ending = true;
    $("end-call").disabled = true;
    if (call.id) {
      try {
        await api("DELETE", `/calls/${encodeURIComponent(call.id)}`);
      } catch (error) {
        // 409: it had already ended (elsewhere); closing our side is all that is left to do.
        if (error.status !== 409) {
          showError($("call-error"), fmt(gettext("The call could not be ended: %s"), [error.message]), "hangup");
          call.ending = false;
          $("end-call").disabled = false;
          return;
        }
      }
    }
    teardown(call, "closed");
  }

  // --- the list feed ---------------------------------------------------------------------------

  function onCallChanged(message) {
    applyCall(message.call);
    const call = current;
    if (call && !call.ending && call.id === message.call.call_id && (message.call.status === "ended" || message.call.status === "failed")) {
      // Ended elsewhere (another tab, the admin, the API): stop sending audio to nobody.
      showError($("call-error"), gettext("The call was ended elsewhere."), "ended-elsewhere");
      teardown(call, "closed");
    }
  }

  // --- code sample -----------------------------------------------------------------------------

  function renderCode() {
    const session = sessionFromForm();
    const url = `${location.origin}${config.apiBase}/calls`;
    const json = JSON.stringify(session, null, 2);
    const pyDict = json.replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
    $("code-js").textContent = `const pc = new RTCPeerConnection({ iceServers: ${JSON.stringify(config.iceServers)} });
const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
stream.getTracks().forEach((track) => pc.addTrack(track, stream));
const events = pc.createDataChannel("oai-events");
events.onmessage = (e) => console.log(JSON.parse(e.data));
pc.ontrack = (e) => { const audio = new Audio(); audio.srcObject = e.streams[0]; audio.play(); };

await pc.setLocalDescription(await pc.createOffer());
// ${gettext("Wait for ICE gathering: the offer is sent once, with its candidates.")}
await new Promise((r) => pc.iceGatheringState === "complete" ? r()
  : pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()));

const response = await fetch("${url}", {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ sdp: pc.localDescription.sdp, session: ${json.replace(/\n/g, "\n  ")} }),
});
const data = await response.json();
if (!data.success) throw new Error(data.error.message);
await pc.setRemoteDescription({ type: "answer", sdp: data.sdp_answer });

// ${gettext("Later: end the call (the record stays for audit).")}
await fetch(\`${url}/\${data.call_id}\`, { method: "DELETE" });`;
    $("code-py").textContent = `import requests

# ${gettext("An SDP offer from your WebRTC stack (aiortc, a SIP gateway...).")}
sdp_offer = open("offer.sdp").read()

response = requests.post("${url}", json={
    "sdp": sdp_offer,
    "session": ${pyDict.replace(/\n/g, "\n    ")},
})
data = response.json()
if not data["success"]:
    raise RuntimeError(data["error"]["message"])
print(data["call_id"], data["status"])
answer = data["sdp_answer"]  # ${gettext("apply it to your peer connection")}

# ${gettext("Later: end the call (the record stays for audit).")}
requests.delete(f"${url}/{data['call_id']}")`;
  }

  // --- wiring ----------------------------------------------------------------------------------

  function saveForm() {
    const values = Object.fromEntries(FORM_FIELDS.map((id) => [id, $(id).type === "checkbox" ? String($(id).checked) : $(id).value]));
    try {
      sessionStorage.setItem(FORM_KEY, JSON.stringify(values));
    } catch (error) {
      // Storage refused (private mode quotas): the switch still works, with a fresh form.
    }
  }

  function restoreForm() {
    let values = null;
    try {
      values = JSON.parse(sessionStorage.getItem(FORM_KEY) || "null");
      sessionStorage.removeItem(FORM_KEY);
    } catch (error) {
      return;
    }
    if (!values) return;
    for (const id of FORM_FIELDS) {
      const field = $(id);
      if (typeof values[id] !== "string") continue;
      // A select keeps its value only if it still offers it (the server's lists may have changed).
      if (field.tagName === "SELECT" && ![...field.options].some((option) => option.value === values[id])) continue;
      if (field.type === "checkbox") field.checked = values[id] === "true";
      else field.value = values[id];
    }
  }

  function showServedModel() {
    const option = $("f-model").selectedOptions[0];
    $("f-model-served").querySelector("code").textContent = option ? option.dataset.served : "—";
  }

  restoreForm();
  showServedModel();
  showTimeZone();
  $("f-temperature-value").textContent = $("f-temperature").value;
  $("call-form").addEventListener("submit", startCall);
  $("call-form").addEventListener("input", () => {
    $("f-temperature-value").textContent = $("f-temperature").value;
    showServedModel();
    renderCode();
  });
  $("end-call").addEventListener("click", endCall);
  $("status-filter").addEventListener("change", loadCalls);
  $("language").addEventListener("change", (event) => {
    saveForm();
    event.target.form.submit();
  });
  // One listener for every copy button, the list's included (its rows are rebuilt on each change).
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (button && button.dataset.copy) copyText(button);
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll(".tab")) {
        other.setAttribute("aria-selected", String(other === tab));
        $(other.dataset.tab).hidden = other !== tab;
      }
    });
  }
  window.addEventListener("beforeunload", () => {
    // Leaving the page ends our call rather than leaving it running until a timeout.
    if (current && current.id && !current.ending) {
      fetch(`${config.apiBase}/calls/${encodeURIComponent(current.id)}`, { method: "DELETE", keepalive: true, headers: { "X-CSRFToken": csrfToken() } });
    }
  });

  renderCode();
  liveSocket(config.feedPath, {
    onOpen: () => Promise.all([loadCalls(), loadStats()]),
    onMessage: (message) => {
      if (message.type === "call.changed") onCallChanged(message);
      else if (message.type === "stats.changed") renderStats(message.stats);
    },
    onState: (state, delay) => showFeedState($("feed-state"), state, delay),
  });
})();

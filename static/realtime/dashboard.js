/* The support dashboard: draws the charts from the figures the page carries (json_script), and
 * keeps "live calls now" current from the calls feed's statistics pushes. Every chart's numbers
 * are also in the table under it, so nothing here is the only way to read a figure. */
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("dashboard-charts").textContent);
  const lang = document.documentElement.lang || "fr";
  const palette = ["#0b5394", "#e69138", "#6aa84f", "#cc0000", "#674ea7", "#45818e", "#bf9000", "#a64d79"];

  function chart(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || typeof window.Chart === "undefined") return null;
    config.options = Object.assign({ locale: lang, responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
    return new window.Chart(canvas, config);
  }

  // One colour per figure wherever it appears: failures in red.
  const colours = { calls: "#0b5394", answered: "#6aa84f", failed: "#cc0000" };

  function series(block, keys) {
    return keys.map((key) => ({ label: data.labels[key], data: block[key], backgroundColor: colours[key], borderColor: colours[key] }));
  }

  chart("chart-hourly", {
    type: "line",
    data: { labels: data.hourly.labels, datasets: series(data.hourly, ["calls", "answered", "failed"]) },
    options: { elements: { point: { radius: 0 } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  chart("chart-daily", {
    type: "bar",
    data: { labels: data.daily.labels, datasets: series(data.daily, ["answered", "failed"]) },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
  chart("chart-cost", {
    type: "bar",
    data: {
      labels: data.cost.labels,
      datasets: data.cost.models.map((model, i) => ({ label: model, data: data.cost.rows.map((row) => row[i]), backgroundColor: palette[i % palette.length] })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
  chart("chart-reasons", {
    type: "bar",
    data: {
      labels: data.reasons.labels,
      datasets: [{ label: data.labels.calls, data: data.reasons.calls, backgroundColor: data.reasons.failure.map((f) => (f ? "#cc0000" : "#0b5394")) }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  chart("chart-durations", {
    type: "bar",
    data: { labels: data.durations.labels, datasets: [{ label: data.labels.calls, data: data.durations.calls, backgroundColor: palette[0] }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });

  // Turn latency per model: one colour per model, p50 solid and p95 dashed; gaps where no turn was measured.
  chart("chart-latency", {
    type: "line",
    data: {
      labels: data.latency.labels,
      datasets: data.latency.models.flatMap((model, i) => {
        const colour = palette[i % palette.length];
        return [
          { label: model + " p50", data: data.latency.p50[i], borderColor: colour, backgroundColor: colour },
          { label: model + " p95", data: data.latency.p95[i], borderColor: colour, backgroundColor: colour, borderDash: [6, 4] },
        ];
      }),
    },
    options: {
      elements: { point: { radius: 2 } },
      scales: { y: { beginAtZero: true, title: { display: true, text: data.labels.latency_ms } } },
    },
  });

  // The language and period selectors apply as soon as they change (their buttons stay for keyboards).
  const language = document.getElementById("dash-language");
  if (language) language.addEventListener("change", () => language.form.submit());

  // --- Live calls now ----------------------------------------------------------------------------
  const active = document.getElementById("live-active");
  const pending = document.getElementById("live-pending");
  const state = document.getElementById("feed-state");
  const number = new Intl.NumberFormat(lang);
  let delay = 1000;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/realtime/calls");
    socket.addEventListener("open", () => {
      delay = 1000;
      state.dataset.state = "live";
      state.textContent = state.dataset.live || state.textContent;
    });
    socket.addEventListener("message", (message) => {
      const push = JSON.parse(message.data);
      if (push.type !== "stats.changed") return;
      active.dataset.value = String(push.stats.active_calls);
      active.textContent = number.format(push.stats.active_calls);
      pending.textContent = number.format(push.stats.pending_calls);
    });
    socket.addEventListener("close", () => {
      state.dataset.state = "reconnecting";
      state.textContent = state.dataset.reconnecting || state.textContent;
      // Back off up to 30 s: a restarting server is not hammered by every open dashboard.
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();

// The Workers card (workers = N): each worker process's in-flight requests,
// rate, CPU, client connections and drift, from the snapshot app.js gets.
// Everything is inserted as text, never as HTML.
(function () {
  "use strict";

  const cell = (text, numeric) => {
    const td = document.createElement("td");
    if (numeric) td.className = "num";
    td.textContent = text;
    return td;
  };

  const fmt = (v, digits) =>
    v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, {
      maximumFractionDigits: digits, minimumFractionDigits: digits,
    });

  function stateOf(w) {
    const span = document.createElement("span");
    const up = w.alive && w.serving;
    span.className = `pill ${up ? "healthy" : "unhealthy"}`;
    span.textContent = up ? "serving" : w.alive ? "starting" : "restarting";
    return span;
  }

  function render(snap) {
    const card = document.getElementById("workers-card");
    const workers = snap.workers;
    if (!card || !Array.isArray(workers)) return;
    card.hidden = false;
    const body = card.querySelector("tbody");
    const rows = workers.map((w) => {
      const tr = document.createElement("tr");
      tr.dataset.worker = String(w.index);
      tr.append(
        cell(`worker ${w.index}`),
        cell(String(w.pid), true),
        cell(fmt(w.in_flight, 0), true),
        cell(fmt(w.rps, 1), true),
        cell(`${fmt(w.cpu_percent, 0)}%`, true),
        cell(fmt(w.connections, 0), true),
        cell(`${fmt(w.drift_max, 0)} / ${fmt(w.drift_mean, 2)}`, true),
        cell(fmt(w.restarts, 0), true),
      );
      const state = document.createElement("td");
      state.append(stateOf(w));
      tr.append(state);
      return tr;
    });
    body.replaceChildren(...rows);
    const total = workers.reduce((sum, w) => sum + (w.in_flight || 0), 0);
    const note = document.getElementById("workers-note");
    note.textContent = `${workers.length} worker processes, ${total} requests in flight in all; counts are the whole balancer's.`;
  }

  document.addEventListener("txlb:snapshot", (event) => render(event.detail));
})();

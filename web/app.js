// txlb dashboard.
//
// Data: Server-Sent Events from ../api/events (falls back to polling
// ../api/server-stats), ../api/history to fill the charts on load, and
// ../api/decisions for "why this backend?".  URLs are relative so the page
// also works behind a path prefix.
//
// Safety: every name and value from the server is put in the page with
// textContent or as a chart label, never as HTML.  No inline script or style
// (the page's Content-Security-Policy forbids them): styles are set through
// the CSSOM.
//
// Memory: every series is a ring of at most MAX_POINTS points.
"use strict";

(function () {
  const API = "../api/";
  const WINDOWS = [60, 300, 900];
  const MAX_SECONDS = 900;
  const MAX_POINTS = 2000; // 15 min at 2 events/s, plus the 1/s history
  const LINES_MAX = 12; // more backends: min/mean/max instead of one line each
  const SHARE_SLICES = 9; // traffic share: the busiest nine, then "others"
  const POLL_MS = 1000;
  const SSE_RETRY_MS = 15000;
  const DECISIONS_MS = 2000;
  const PALETTE = [
    "#5b9cff", "#34d399", "#fbbf24", "#f472b6", "#a78bfa", "#22d3ee",
    "#fb923c", "#a3e635", "#e879f9", "#f87171", "#94a3b8", "#2dd4bf",
  ];
  const STATE_ORDER = { unhealthy: 0, ejected: 1, unknown: 2, draining: 3, starting: 4, healthy: 5 };

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const setText = (node, text) => {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  };

  // --- formatting -------------------------------------------------------------

  const fmtNumber = (v, digits) =>
    v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toLocaleString(undefined, {
      maximumFractionDigits: digits, minimumFractionDigits: 0,
    });
  const fmtRate = (v) => (v === null || v === undefined ? "–" : v >= 100 ? fmtNumber(v, 0) : fmtNumber(v, 1));
  const fmtMs = (v) => (v === null || v === undefined ? "–" : v >= 100 ? `${fmtNumber(v, 0)} ms` : v >= 10 ? `${fmtNumber(v, 1)} ms` : `${fmtNumber(v, 2)} ms`);
  const fmtPct = (v) => (v === null || v === undefined ? "–" : v === 0 ? "0%" : v < 0.001 ? "<0.1%" : `${fmtNumber(v * 100, 1)}%`);
  const fmtClock = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false });
  const fmtClockMs = (t) => {
    const d = new Date(t * 1000);
    return `${d.toLocaleTimeString(undefined, { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  };
  const fmtDuration = (s) => {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  };
  const fmtWeight = (w) => fmtNumber(w, 3);

  // --- state ----------------------------------------------------------------

  const state = {
    snapshot: null,
    colors: new Map(), // backend name -> colour, fixed by configuration order
    windowSeconds: 300,
    sort: { key: null, dir: 1 },
    filter: "",
    admin: { enabled: false, token: sessionStorage.getItem("txlb-admin-token") || "" },
    decisionsPaused: false,
    lastPoint: 0,
    rows: new Map(), // backend name -> row elements
  };

  const colorFor = (name) => state.colors.get(name) || "#94a3b8";
  const assignColors = (names) => {
    names.forEach((name, i) => {
      if (!state.colors.has(name)) {
        state.colors.set(name, i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360} 70% 62%)`);
      }
    });
  };

  // --- charts -----------------------------------------------------------------

  const charts = {};
  const chartsReady = typeof window.Chart === "function";

  function timeAxis() {
    return {
      type: "linear",
      ticks: { maxTicksLimit: 7, maxRotation: 0, callback: (v) => fmtClock(v) },
      grid: { color: "rgba(36, 48, 77, 0.6)" },
    };
  }

  function lineChart(canvas, yOptions, datasets, legend) {
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 2, cubicInterpolationMode: "monotone" } },
        scales: {
          x: timeAxis(),
          y: Object.assign({ beginAtZero: true, grid: { color: "rgba(36, 48, 77, 0.6)" } }, yOptions),
        },
        plugins: {
          legend: { display: legend, position: "bottom", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true, pointStyle: "rectRounded" } },
          tooltip: {
            callbacks: { title: (items) => (items.length ? fmtClock(items[0].parsed.x) : "") },
          },
        },
      },
    });
  }

  const series = (label, color, extra) =>
    Object.assign({ label, data: [], borderColor: color, backgroundColor: color + "22", fill: false }, extra || {});

  function setupCharts() {
    if (!chartsReady) {
      showBanner("Chart.js is missing from web/vendor/: run `make web-vendor` and reinstall txlb. The numbers below still update.");
      return;
    }
    const C = window.Chart;
    C.defaults.color = "#8f9bb8";
    C.defaults.borderColor = "#24304d";
    C.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    C.defaults.font.size = 11;

    charts.active = lineChart($("chart-active"), { ticks: { precision: 0 }, title: { display: true, text: "in flight" } }, [], true);
    charts.rps = lineChart($("chart-rps"), { ticks: { precision: 0 } }, [
      series("total", "#5b9cff", { fill: true, backgroundColor: "rgba(91, 156, 255, 0.12)" }),
    ], false);
    charts.latency = lineChart($("chart-latency"), { title: { display: false } }, [
      series("p50", "#34d399"), series("p95", "#fbbf24"), series("p99", "#f87171"),
    ], true);
    charts.errors = lineChart($("chart-errors"), {
      suggestedMax: 0.05,
      ticks: { callback: (v) => `${Math.round(v * 1000) / 10}%` },
    }, [series("5xx", "#f87171", { fill: true, backgroundColor: "rgba(248, 113, 113, 0.12)" })], false);
    charts.errors.options.plugins.tooltip.callbacks.label = (item) => `error rate ${fmtPct(item.parsed.y)}`;
    charts.latency.options.plugins.tooltip.callbacks.label = (item) => `${item.dataset.label} ${fmtMs(item.parsed.y)}`;

    charts.share = new C($("chart-share"), {
      type: "doughnut",
      data: { labels: [], datasets: [{ data: [], backgroundColor: [], borderColor: "#121a2c", borderWidth: 2 }] },
      options: {
        animation: { duration: 300 },
        responsive: true,
        maintainAspectRatio: false,
        cutout: "62%",
        plugins: {
          legend: { position: "right", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true, pointStyle: "rectRounded" } },
          tooltip: { callbacks: { label: (item) => `${item.label}: ${fmtPct(item.parsed)}` } },
        },
      },
    });
  }

  // The active-connections chart has one line per backend, or, with many
  // backends, their max / mean / min (the spread least-conn keeps small).
  let activeMode = null;
  function configureActive(names) {
    const mode = names.length <= LINES_MAX ? "lines" : "spread";
    const key = mode === "lines" ? `lines:${names.join("\u0000")}` : "spread";
    if (!charts.active || activeMode === key) return;
    activeMode = key;
    if (mode === "lines") {
      charts.active.data.datasets = names.map((name) => series(name, colorFor(name), { stepped: false }));
      setText($("active-note"), "Least connections keeps these lines together; a backend drifting up is slow or overloaded.");
    } else {
      charts.active.data.datasets = [
        series("max", "#f87171", { fill: "+1", backgroundColor: "rgba(91, 156, 255, 0.10)" }),
        series("mean", "#5b9cff", { borderWidth: 2.5 }),
        series("min", "#34d399"),
      ];
      charts.active.data.datasets[1].fill = false;
      setText($("active-note"), `${names.length} backends: the busiest, mean and least busy backend at each moment. A narrow band means an even spread.`);
    }
    charts.active.options.plugins.legend.display = true;
  }

  const push = (dataset, x, y) => {
    const data = dataset.data;
    if (data.length && data[data.length - 1].x >= x) return;
    data.push({ x, y });
    if (data.length > MAX_POINTS) data.splice(0, data.length - MAX_POINTS);
  };

  function addPoint(t, totals, perBackend) {
    // perBackend: array of [active, rps] in the snapshot's backend order
    if (!chartsReady || t <= state.lastPoint) return;
    state.lastPoint = t;
    const ds = charts.active.data.datasets;
    if (activeMode && activeMode.startsWith("lines")) {
      perBackend.forEach((row, i) => ds[i] && push(ds[i], t, row[0]));
    } else if (perBackend.length) {
      let max = -Infinity, min = Infinity, sum = 0;
      for (const row of perBackend) {
        max = Math.max(max, row[0]);
        min = Math.min(min, row[0]);
        sum += row[0];
      }
      push(ds[0], t, max);
      push(ds[1], t, Math.round((sum / perBackend.length) * 100) / 100);
      push(ds[2], t, min);
    }
    push(charts.rps.data.datasets[0], t, totals.rps);
    const lat = charts.latency.data.datasets;
    push(lat[0], t, totals.p50);
    push(lat[1], t, totals.p95);
    push(lat[2], t, totals.p99);
    push(charts.errors.data.datasets[0], t, totals.error_rate);
  }

  function redrawCharts(now) {
    if (!chartsReady) return;
    // Until there is a whole window of data, the data fills the chart
    // (at least 10 s of it) instead of huddling at the right edge.
    const first = charts.rps.data.datasets[0].data[0];
    const start = Math.max(now - state.windowSeconds, Math.min(first ? first.x : now, now - 10));
    for (const name of ["active", "rps", "latency", "errors"]) {
      const chart = charts[name];
      chart.options.scales.x.min = start;
      chart.options.scales.x.max = now;
      chart.update("none");
    }
  }

  function updateShare(backends) {
    if (!chartsReady) return;
    const byShare = backends.filter((b) => b.share > 0).sort((a, b) => b.share - a.share);
    const labels = [], values = [], colors = [];
    byShare.slice(0, SHARE_SLICES).forEach((b) => {
      labels.push(b.name);
      values.push(b.share);
      colors.push(colorFor(b.name));
    });
    const rest = byShare.slice(SHARE_SLICES).reduce((sum, b) => sum + b.share, 0);
    if (rest > 0) {
      labels.push(`${byShare.length - SHARE_SLICES} others`);
      values.push(rest);
      colors.push("#475569");
    }
    if (!values.length) {
      labels.push("no traffic");
      values.push(1);
      colors.push("#1e293b");
    }
    const chart = charts.share;
    chart.data.labels = labels;
    chart.data.datasets[0].data = values;
    chart.data.datasets[0].backgroundColor = colors;
    chart.update();
  }

  // --- the snapshot ------------------------------------------------------------

  function onSnapshot(snap) {
    state.snapshot = snap;
    const names = snap.backends.map((b) => b.name);
    assignColors(names);
    configureActive(names);
    const t = snap.totals;
    addPoint(snap.time, {
      rps: t.rps, p50: t.latency_ms.p50, p95: t.latency_ms.p95, p99: t.latency_ms.p99, error_rate: t.error_rate,
    }, snap.backends.map((b) => [b.active_connections, b.rps]));
    redrawCharts(snap.time);
    updateShare(snap.backends);
    updateHeader(snap);
    updateTable(snap);
    updateEvents(snap);
    // Panels in their own files (discovery.js, workers.js, affinity.js,
    // fleet.js) draw from the same snapshot.
    document.dispatchEvent(new CustomEvent("txlb:snapshot", { detail: snap }));
  }

  function updateHeader(snap) {
    const t = snap.totals;
    setText($("algorithm"), snap.algorithm === "least_conn" ? "least connections" : snap.algorithm.replace("_", " "));
    setText($("uptime"), fmtDuration(snap.uptime));
    setText($("updated"), fmtClock(snap.time));
    setText($("kpi-rps"), fmtRate(t.rps));
    setText($("kpi-rps-sub"), `${fmtNumber(t.total_requests, 0)} requests in all`);
    setText($("kpi-active"), fmtNumber(t.active_connections, 0));
    setText($("kpi-active-sub"), `over ${t.available} backend${t.available === 1 ? "" : "s"} in rotation`);
    setText($("kpi-p50"), fmtMs(t.latency_ms.p50));
    setText($("kpi-p95"), fmtMs(t.latency_ms.p95));
    setText($("kpi-p99"), fmtMs(t.latency_ms.p99));
    setText($("kpi-errors"), fmtPct(t.error_rate));
    $("kpi-errors").className = "value" + (t.error_rate >= 0.05 ? " bad" : t.error_rate > 0 ? " warn" : "");
    setText($("kpi-up"), `${t.healthy} / ${t.backends}`);
    $("kpi-up").className = "value" + (t.healthy < t.backends ? (t.healthy === 0 ? " bad" : " warn") : " good");
    const draining = snap.backends.filter((b) => b.state === "draining").length;
    const ejected = snap.backends.filter((b) => b.state === "ejected").length;
    const notes = [];
    if (t.panic) notes.push("PANIC: balancing over all");
    if (draining) notes.push(`${draining} draining`);
    if (ejected) notes.push(`${ejected} ejected`);
    if (!notes.length) notes.push(t.available === t.backends ? "all in rotation" : `${t.available} in rotation`);
    setText($("kpi-up-sub"), notes.join(" · "));
    // The queue: requests waiting for a backend below its max_connections.
    const queued = t.queued ?? 0;
    setText($("kpi-queue"), `${fmtNumber(queued, 0)} / ${fmtNumber(t.queue_size, 0)}`);
    $("kpi-queue").className = "value" + (queued >= t.queue_size && t.queue_size > 0 ? " bad" : queued > 0 ? " warn" : "");
    const refused = (t.queue_timeouts ?? 0) + (t.queue_full_rejections ?? 0);
    setText($("kpi-queue-sub"), `${fmtNumber(t.queue_timeouts, 0)} timed out · ${fmtNumber(t.queue_full_rejections, 0)} refused · ${fmtNumber(t.queued_total, 0)} waited`);
    $("kpi-queue-sub").className = "note" + (refused ? " warn-text" : "");
  }

  // --- table ------------------------------------------------------------------

  const sortValue = (b, key) => {
    if (key === "p50" || key === "p95" || key === "p99") return b.latency_ms[key] ?? -1;
    if (key === "state") return STATE_ORDER[b.state] ?? 9;
    return b[key];
  };

  function makeRow(b) {
    const tr = el("tr");
    const cells = {};
    const nameCell = el("td");
    const name = el("div", "name");
    const swatch = el("span", "swatch");
    swatch.style.background = colorFor(b.name);
    const label = el("div");
    cells.name = el("strong", null, b.name);
    label.append(cells.name, el("div", "addr", b.address));
    name.append(swatch, label);
    nameCell.append(name);
    tr.append(nameCell);

    const stateCell = el("td");
    cells.state = el("span", "pill", "");
    stateCell.append(cells.state);
    tr.append(stateCell);

    const bar = (extraClass) => {
      const td = el("td");
      const wrap = el("div", "bar");
      const track = el("div", "track");
      const fill = el("div", "fill");
      track.append(fill);
      const text = el("span", "label");
      wrap.append(text, track);
      if (extraClass) wrap.classList.add(extraClass);
      td.append(wrap);
      return { td, fill, text };
    };
    cells.active = el("td", "num");
    tr.append(cells.active);
    cells.rps = el("td", "num");
    tr.append(cells.rps);
    cells.share = bar();
    cells.share.fill.style.background = colorFor(b.name);
    tr.append(cells.share.td);
    for (const p of ["p50", "p95", "p99", "errors", "weight", "total", "failures"]) {
      cells[p] = el("td", "num");
      tr.append(cells[p]);
    }
    cells.source = el("td", "source", b.source || "static");
    tr.append(cells.source);
    const stripCell = el("td");
    cells.strip = el("div", "strip");
    stripCell.append(cells.strip);
    tr.append(stripCell);

    const actions = el("td", "admin-only");
    const box = el("div", "actions");
    cells.toggle = el("button", "small danger", "Drain");
    cells.toggle.type = "button";
    cells.toggle.addEventListener("click", () => {
      const current = state.snapshot && state.snapshot.backends.find((x) => x.name === b.name);
      const action = current && current.state === "draining" ? "enable" : "drain";
      adminAction(b.name, action);
    });
    cells.weightInput = el("input");
    cells.weightInput.type = "number";
    cells.weightInput.min = "0.001";
    cells.weightInput.max = "1000";
    cells.weightInput.step = "any";
    cells.weightInput.setAttribute("aria-label", `weight of ${b.name}`);
    const setWeight = el("button", "small ghost", "Set");
    setWeight.title = `Set the weight of ${b.name}`;
    setWeight.type = "button";
    setWeight.addEventListener("click", () => {
      const value = Number(cells.weightInput.value);
      if (!(value > 0 && value <= 1000)) {
        toast("Weight must be above 0 and at most 1000.", "error");
        return;
      }
      adminAction(b.name, "weight", { weight: value });
    });
    cells.toggle.dataset.backend = b.name;
    setWeight.dataset.backend = b.name;
    box.append(cells.toggle, cells.weightInput, setWeight);
    actions.append(box);
    tr.append(actions);
    tr.dataset.backend = b.name;
    return { tr, cells, stripKey: "" };
  }

  function fillStrip(row, b, now, uptime) {
    // The backend's states over the last 15 minutes (or since start, if
    // shorter), from its state transitions; older history is cut off.
    const span = Math.min(MAX_SECONDS, Math.max(uptime, 30));
    const start = now - span;
    const history = b.history || [];
    const key = `${history.length}:${history.length ? history[history.length - 1].time : 0}:${Math.floor(now / 5)}`;
    if (row.stripKey === key) return;
    row.stripKey = key;
    const segments = [];
    let current = history.length ? history[0].state : b.state;
    let from = start;
    for (const h of history) {
      if (h.time <= start) {
        current = h.state;
        continue;
      }
      segments.push([from, h.time, current]);
      from = h.time;
      current = h.state;
    }
    segments.push([from, now, current]);
    const strip = row.cells.strip;
    strip.replaceChildren();
    for (const [a, z, s] of segments) {
      const width = ((z - a) / span) * 100;
      if (width <= 0) continue;
      const piece = el("span", s);
      piece.style.width = `${Math.max(width, 1.5)}%`;
      piece.title = `${s} from ${fmtClock(a)} to ${fmtClock(z)}`;
      strip.append(piece);
    }
    strip.title = `States over the last ${fmtDuration(span)}`;
  }

  function updateTable(snap) {
    const tbody = $("backends").tBodies[0];
    const filter = state.filter;
    let list = snap.backends.filter((b) => !filter || b.name.toLowerCase().includes(filter) || b.address.toLowerCase().includes(filter) || (b.source || "").toLowerCase().includes(filter));
    if (state.sort.key) {
      const { key, dir } = state.sort;
      list = list.slice().sort((a, b) => {
        const x = sortValue(a, key), y = sortValue(b, key);
        return (x < y ? -1 : x > y ? 1 : 0) * dir || a.name.localeCompare(b.name);
      });
    }
    const maxActive = Math.max(1, ...snap.backends.map((b) => b.active_connections));
    const seen = new Set();
    list.forEach((b, index) => {
      let row = state.rows.get(b.name);
      if (!row) {
        row = makeRow(b);
        state.rows.set(b.name, row);
      }
      seen.add(b.name);
      const c = row.cells;
      c.state.className = `pill ${b.state}`;
      setText(c.state, b.state);
      setText(c.source, b.source || "static");
      row.tr.className = b.state === "draining" ? "is-draining" : b.healthy ? "" : "is-unhealthy";
      // "3 / 4" when the backend has a max_connections, "3" when unlimited.
      const limit = b.max_connections || 0;
      setText(c.active, limit ? `${fmtNumber(b.active_connections, 0)} / ${fmtNumber(limit, 0)}` : fmtNumber(b.active_connections, 0));
      c.active.classList.toggle("warn-text", limit > 0 && b.active_connections >= limit);
      c.active.title = limit
        ? `${b.active_connections} of max_connections ${limit}` + (b.active_connections >= limit ? ": full, new requests wait in the queue" : "")
        : `${b.active_connections} of the busiest backend's ${maxActive} (no max_connections)`;
      setText(c.rps, fmtRate(b.rps));
      c.share.fill.style.width = `${Math.min(100, b.share * 100)}%`;
      setText(c.share.text, fmtPct(b.share));
      setText(c.p50, fmtMs(b.latency_ms.p50));
      setText(c.p95, fmtMs(b.latency_ms.p95));
      setText(c.p99, fmtMs(b.latency_ms.p99));
      setText(c.errors, fmtPct(b.error_rate));
      c.errors.className = "num" + (b.error_rate > 0 ? " warn-text" : "");
      const ramping = b.configured_weight && b.weight < b.configured_weight;
      setText(c.weight, ramping ? `${fmtWeight(b.weight)} → ${fmtWeight(b.configured_weight)}` : fmtWeight(b.weight));
      c.weight.title = ramping ? "Slow start: the weight grows to its configured value" : "";
      setText(c.total, fmtNumber(b.total_requests, 0));
      setText(c.failures, fmtNumber(b.failures, 0));
      fillStrip(row, b, snap.time, snap.uptime);
      setText(c.toggle, b.state === "draining" ? "Enable" : "Drain");
      c.toggle.className = b.state === "draining" ? "small" : "small danger";
      if (document.activeElement !== c.weightInput) c.weightInput.value = String(b.configured_weight || b.weight);
      if (tbody.children[index] !== row.tr) tbody.insertBefore(row.tr, tbody.children[index] || null);
    });
    for (const [name, row] of state.rows) {
      if (!seen.has(name) && row.tr.parentNode) row.tr.remove();
    }
    const shown = list.length === snap.backends.length ? `${list.length} backend${list.length === 1 ? "" : "s"}` : `${list.length} of ${snap.backends.length} backends`;
    setText($("table-note"), `${shown} · rates over the last ${snap.window_seconds.rate} s, latency over ${snap.window_seconds.latency} s`);
  }

  function setupTable() {
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "name" || key === "state" ? 1 : -1 };
        for (const other of document.querySelectorAll("th[data-sort]")) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", state.sort.dir === 1 ? "ascending" : "descending");
        if (state.snapshot) updateTable(state.snapshot);
      });
    }
    $("filter").addEventListener("input", (e) => {
      state.filter = e.target.value.trim().toLowerCase();
      if (state.snapshot) updateTable(state.snapshot);
    });
  }

  // --- health events --------------------------------------------------------------

  let eventsKey = null;
  function updateEvents(snap) {
    const all = [];
    for (const b of snap.backends) {
      (b.history || []).forEach((h, i) => {
        if (i === 0 && h.reason === "configured") return;
        all.push({ name: b.name, h });
      });
    }
    all.sort((a, b) => b.h.time - a.h.time);
    const top = all.slice(0, 60);
    const key = top.map((e) => `${e.name}@${e.h.time}`).join("|");
    if (key === eventsKey) return;
    eventsKey = key;
    const list = $("events");
    list.replaceChildren();
    if (!top.length) {
      list.append(el("li", "empty", "No changes since start: every backend has kept its state."));
      return;
    }
    for (const { name, h } of top) {
      const li = el("li");
      li.append(el("span", "when", fmtClock(h.time)));
      const what = el("div", "what");
      what.append(el("strong", null, name), el("span", `pill ${h.state}`, h.state));
      li.append(what, el("span", "why", h.reason));
      list.append(li);
    }
  }

  // --- why this backend? -------------------------------------------------------------

  async function refreshDecisions() {
    if (state.decisionsPaused || document.hidden) return;
    try {
      const data = await getJSON("decisions?limit=60");
      renderDecisions(data);
    } catch (e) {
      // The stream status already says when the server is unreachable.
    }
  }

  function renderDecisions(data) {
    const list = $("decisions");
    list.replaceChildren();
    setText($("decisions-note"), `Newest first. ${fmtNumber(data.picks, 0)} picks so far; up to ${data.sampled_per_second_max} a second are recorded.`);
    if (!data.decisions.length) {
      list.append(el("li", "empty", "No requests yet: send some traffic through txlb and each choice appears here with its reason."));
      return;
    }
    for (const d of data.decisions) {
      const li = el("li", "decision");
      const head = el("div", "head");
      head.append(el("span", "muted", `#${d.pick}`), el("span", null, "→"));
      const winner = el("span", "winner", d.winner);
      winner.style.color = colorFor(d.winner);
      head.append(winner);
      if (d.excluded.length) head.append(el("span", "retry", `retry: skipped ${d.excluded.join(", ")}`));
      head.append(el("span", "when", fmtClockMs(d.time)));
      li.append(head, el("p", "reason", d.reason));
      const chips = el("div", "chips");
      for (const c of d.candidates) {
        const chip = el("span", "chip" + (c.winner ? " won" : c.tied ? " tied" : ""));
        chip.title = `${c.name}: ${c.active} active, weight ${fmtWeight(c.weight)}, virtual time ${fmtNumber(c.vtime, 3)}`;
        chip.append(el("span", null, c.name), el("span", "load", d.algorithm === "least_conn" ? `${c.active}/${fmtWeight(c.weight)}` : `v ${fmtNumber(c.vtime, 2)}`));
        chips.append(chip);
      }
      const more = d.candidates_total - d.candidates.length;
      if (more > 0) chips.append(el("span", "chip more", `+${more} more`));
      li.append(chips);
      list.append(li);
    }
  }

  function setupDecisions() {
    const button = $("decisions-pause");
    button.addEventListener("click", () => {
      state.decisionsPaused = !state.decisionsPaused;
      button.setAttribute("aria-pressed", String(state.decisionsPaused));
      setText(button, state.decisionsPaused ? "Resume" : "Pause");
      if (!state.decisionsPaused) refreshDecisions();
    });
    refreshDecisions();
    setInterval(refreshDecisions, DECISIONS_MS);
  }

  // --- admin ------------------------------------------------------------------------

  async function adminAction(name, action, body) {
    if (!state.admin.enabled) {
      toast("Admin actions are off: set admin_token_file in [txlb].", "error");
      return;
    }
    if (!state.admin.token) {
      openAdmin();
      return;
    }
    try {
      const response = await fetch(`${API}backends/${encodeURIComponent(name)}/${action}`, {
        method: "POST",
        headers: Object.assign({ Authorization: `Bearer ${state.admin.token}` }, body ? { "Content-Type": "application/json" } : {}),
        body: body ? JSON.stringify(body) : undefined,
        cache: "no-store",
      });
      const result = await response.json().catch(() => ({}));
      if (!response.ok) {
        if (response.status === 401 || response.status === 403) {
          toast(`Refused (${response.status}): ${result.error || "check the admin token"}`, "error");
          if (response.status === 403 && state.admin.enabled) openAdmin();
        } else {
          toast(`Failed (${response.status}): ${result.error || response.statusText}`, "error");
        }
        return;
      }
      const verb = action === "drain" ? "is draining" : action === "enable" ? "is back in rotation" : `now has weight ${fmtWeight(result.weight)}`;
      toast(`${name} ${verb}.`, "ok");
      pollOnce();
    } catch (e) {
      toast(`Could not reach txlb: ${e.message}`, "error");
    }
  }

  function openAdmin() {
    const dialog = $("admin-dialog");
    setText($("admin-status"), state.admin.enabled
      ? state.admin.token ? "A token is set for this tab. Drain, enable and weight buttons are in the backend table." : "Enter the token from the file named by admin_token_file."
      : "Admin actions are off on this server: set admin_token_file in [txlb] to turn them on.");
    $("admin-token").disabled = !state.admin.enabled;
    $("admin-save").disabled = !state.admin.enabled;
    $("admin-token").value = "";
    if (typeof dialog.showModal === "function") dialog.showModal();
  }

  function setupAdmin() {
    $("admin-button").addEventListener("click", openAdmin);
    $("admin-cancel").addEventListener("click", () => $("admin-dialog").close());
    $("admin-forget").addEventListener("click", () => {
      state.admin.token = "";
      sessionStorage.removeItem("txlb-admin-token");
      updateAdminUI();
      $("admin-dialog").close();
      toast("Admin token forgotten.", "ok");
    });
    $("admin-form").addEventListener("submit", (e) => {
      const token = $("admin-token").value.trim();
      if (!token) {
        e.preventDefault();
        return;
      }
      state.admin.token = token;
      sessionStorage.setItem("txlb-admin-token", token);
      updateAdminUI();
      toast("Admin token set for this tab.", "ok");
    });
    getJSON("admin").then((data) => {
      state.admin.enabled = Boolean(data.enabled);
      updateAdminUI();
    }).catch(() => {});
  }

  function updateAdminUI() {
    const on = state.admin.enabled && Boolean(state.admin.token);
    document.body.classList.toggle("admin", on);
    const button = $("admin-button");
    setText(button, !state.admin.enabled ? "Admin: off" : on ? "Admin: on" : "Admin");
    button.title = state.admin.enabled ? "Drain, enable or re-weight backends" : "Admin actions are off on this server";
  }

  // --- transport: SSE, else polling -------------------------------------------------

  let source = null;
  let pollTimer = null;

  function setMode(mode, text) {
    const node = $("stream");
    node.dataset.mode = mode;
    setText(node, text);
  }

  function startSSE() {
    if (typeof window.EventSource !== "function") {
      startPolling();
      return;
    }
    source = new EventSource(`${API}events`);
    source.addEventListener("stats", (e) => {
      stopPolling();
      setMode("live", "live");
      try {
        onSnapshot(JSON.parse(e.data));
      } catch (err) {
        console.warn("txlb: bad event", err);
      }
    });
    source.addEventListener("error", () => {
      // Fall back to polling, and try the stream again a little later.
      if (source) source.close();
      source = null;
      startPolling();
      setTimeout(startSSE, SSE_RETRY_MS);
    });
  }

  function startPolling() {
    if (pollTimer) return;
    setMode("polling", "polling");
    pollTimer = setInterval(pollOnce, POLL_MS);
    pollOnce();
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  async function pollOnce() {
    try {
      onSnapshot(await getJSON("server-stats"));
      if (pollTimer) setMode("polling", "polling");
    } catch (e) {
      if (pollTimer) setMode("offline", "offline");
    }
  }

  async function getJSON(path) {
    const response = await fetch(API + path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }

  async function loadHistory() {
    if (!chartsReady) return;
    try {
      const h = await getJSON(`history?seconds=${MAX_SECONDS}`);
      assignColors(h.backends);
      configureActive(h.backends);
      const f = h.fields;
      const at = (row, name) => row[f.indexOf(name)];
      for (const p of h.points) {
        addPoint(p.time, {
          rps: at(p.totals, "rps"), p50: at(p.totals, "p50"), p95: at(p.totals, "p95"), p99: at(p.totals, "p99"), error_rate: at(p.totals, "error_rate"),
        }, p.backends);
      }
      if (h.points.length) redrawCharts(h.time);
    } catch (e) {
      // No history is no harm: the live data fills the charts.
    }
  }

  // --- bits -----------------------------------------------------------------------

  function showBanner(text) {
    const banner = $("banner");
    setText(banner, text);
    banner.hidden = false;
  }

  function toast(text, kind) {
    const node = el("div", `toast ${kind || ""}`, text);
    $("toasts").append(node);
    setTimeout(() => node.remove(), 4000);
  }

  function setupWindows() {
    for (const button of document.querySelectorAll("[data-window]")) {
      button.addEventListener("click", () => {
        state.windowSeconds = Number(button.dataset.window);
        for (const other of document.querySelectorAll("[data-window]")) other.setAttribute("aria-pressed", String(other === button));
        if (state.snapshot) redrawCharts(state.snapshot.time);
      });
    }
    if (!WINDOWS.includes(state.windowSeconds)) state.windowSeconds = 300;
  }

  async function main() {
    setupCharts();
    setupTable();
    setupWindows();
    setupAdmin();
    updateAdminUI();
    await loadHistory();
    startSSE();
    setupDecisions();
  }

  main();
})();

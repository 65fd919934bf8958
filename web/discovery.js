// txlb dashboard: the Discovery card.
//
// Follows the snapshots app.js receives (the "txlb:snapshot" event): one row
// per [discovery:NAME] section (what it asks, its state, what it found, its
// last answer, refresh and error), and the backends' count by source.  As in
// app.js, everything from the server is inserted as text, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const ago = (now, t) => {
    if (t === null || t === undefined) return "–";
    const s = Math.round(now - t);
    return s <= 0 ? "now" : s < 120 ? `${s}s ago` : `${Math.round(s / 60)}m ago`;
  };
  const inSeconds = (now, t) => {
    if (t === null || t === undefined) return "–";
    const s = t - now;
    return s <= 0.5 ? "now" : s < 120 ? `in ${s.toFixed(s < 10 ? 1 : 0)}s` : `in ${Math.round(s / 60)}m`;
  };
  const STATE_CLASS = { ok: "healthy", failing: "unhealthy", empty: "draining", starting: "unknown" };
  const rows = new Map();

  function row(section) {
    const tr = el("tr");
    const cells = {};
    for (const key of ["source", "query", "state", "found", "answer", "refreshed", "next", "refreshes", "errors", "error"]) {
      const numeric = key === "found" || key === "refreshes" || key === "errors";
      cells[key] = el("td", numeric ? "num" : key === "query" || key === "answer" || key === "error" ? "why" : null);
      tr.append(cells[key]);
    }
    cells.pill = el("span", "pill");
    cells.state.append(cells.pill);
    return { tr, cells };
  }

  function set(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function update(snap) {
    const card = $("discovery-card");
    if (!card) return;
    const sections = snap.discovery || [];
    const bySource = new Map();
    for (const b of snap.backends) bySource.set(b.source || "static", (bySource.get(b.source || "static") || 0) + 1);
    const counts = [...bySource].map(([source, n]) => `${source} ${n}`).join(" · ");
    set($("discovery-note"), sections.length
      ? `Backends by source: ${counts || "none"}`
      : `No [discovery:NAME] section: backends come from lb.ini and the admin API (${counts || "none"})`);
    const tbody = $("discovery").tBodies[0];
    const seen = new Set();
    sections.forEach((s, index) => {
      let r = rows.get(s.source);
      if (!r) {
        r = row(s);
        rows.set(s.source, r);
      }
      seen.add(s.source);
      const c = r.cells;
      set(c.source, s.source);
      set(c.query, s.query);
      c.pill.className = `pill ${STATE_CLASS[s.state] || "unknown"}`;
      set(c.pill, s.state);
      set(c.found, s.found);
      c.found.title = (s.backends || []).join("\n");
      set(c.answer, s.answer || "–");
      set(c.refreshed, ago(snap.time, s.last_refresh));
      set(c.next, inSeconds(snap.time, s.next_refresh));
      set(c.refreshes, s.refreshes);
      set(c.errors, s.errors);
      c.errors.className = "num" + (s.state === "failing" ? " warn-text" : "");
      const since = s.failing_since !== null && s.failing_since !== undefined ? ` (failing for ${ago(snap.time, s.failing_since).replace(" ago", "")})` : "";
      set(c.error, s.last_error ? s.last_error + since : "–");
      if (tbody.children[index] !== r.tr) tbody.insertBefore(r.tr, tbody.children[index] || null);
    });
    for (const [source, r] of rows) {
      if (!seen.has(source)) {
        r.tr.remove();
        rows.delete(source);
      }
    }
    $("discovery").hidden = sections.length === 0;
  }

  document.addEventListener("txlb:snapshot", (e) => update(e.detail));
})();

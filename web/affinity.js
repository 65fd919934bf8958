// txlb dashboard: the parts that are on only when configured.
//
// app.js dispatches each snapshot of ../api/server-stats as a "txlb:snapshot"
// event; this card shows what it carries of them: with algorithm = hash, each
// backend's share of the ring (of all keys) beside its share of the traffic;
// with sticky, the cookie's hits and misses; with [ratelimit], the requests
// let in and refused and the clients tracked.  Hidden when none is on.
//
// Safety: as app.js, text only (textContent), widths through the CSSOM.
"use strict";

(function () {
  let card = null;
  const parts = {};

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pct(x) {
    return `${(100 * x).toFixed(1)}%`;
  }

  function count(n) {
    return Number(n).toLocaleString("en-US");
  }

  function build() {
    card = el("section", "card");
    card.id = "affinity";
    card.hidden = true;
    const head = el("header", "card-head");
    const title = el("div");
    title.append(
      el("h2", null, "Affinity and rate limits"),
      el("p", "note", "Consistent hashing, sticky sessions and per-client limits, when configured."),
    );
    head.append(title);
    const grid = el("div", "grid three");
    for (const name of ["hash", "sticky", "ratelimit"]) {
      const box = el("article", "kpi");
      box.id = `affinity-${name}`;
      box.hidden = true;
      parts[name] = box;
      grid.append(box);
    }
    card.append(head, grid);
    const kpis = document.querySelector("section.kpis");
    if (kpis) kpis.after(card);
    else document.querySelector("main").append(card);
  }

  function facts(box, title, rows) {
    box.replaceChildren(el("h2", null, title));
    const list = el("dl", "affinity-facts");
    for (const [term, value] of rows) {
      const row = el("div");
      row.append(el("dt", "note", term), el("dd", "value-small", value));
      list.append(row);
    }
    box.append(list);
  }

  function renderHash(box, hash, backends) {
    box.replaceChildren(
      el("h2", null, `Key share (hash of ${hash.key})`),
      el("p", "note", `bound ${hash.balance_factor || "off"} × mean load · ${count(hash.ring_points)} points on the ring · keys / traffic`),
    );
    for (const b of backends) {
      const row = el("div", "bar");
      row.title = `${b.name}: ${pct(b.key_share)} of all keys map here; ${pct(b.share)} of the last 5 s of responses`;
      const name = el("span", "label", b.name);
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = `${Math.min(100, 100 * b.key_share)}%`;
      track.append(fill);
      row.append(name, track, el("span", "label", pct(b.key_share)), el("span", "label", pct(b.share)));
      box.append(row);
    }
  }

  function renderSticky(box, sticky) {
    const asked = sticky.hits + sticky.misses;
    const reasons = Object.entries(sticky.miss_reasons)
      .map(([why, n]) => `${why} ${count(n)}`)
      .join(", ");
    facts(box, `Sticky sessions (cookie ${sticky.cookie})`, [
      ["hits", `${count(sticky.hits)}${asked ? ` (${pct(sticky.hits / asked)})` : ""}`],
      ["misses", count(sticky.misses)],
      ["why missed", reasons || "–"],
      ["cookies set", count(sticky.set_cookies)],
    ]);
  }

  function renderLimit(box, limit) {
    const asked = limit.allowed + limit.limited;
    facts(box, `Rate limit (${limit.rate}/s, burst ${limit.burst}, by ${limit.key})`, [
      ["allowed", count(limit.allowed)],
      ["refused (429)", `${count(limit.limited)}${asked ? ` (${pct(limit.limited / asked)})` : ""}`],
      ["clients tracked", count(limit.clients_tracked)],
      [`clients refused, last ${limit.recent_seconds} s`, count(limit.clients_limited_recently)],
    ]);
  }

  function render(snap) {
    if (!card) build();
    const shown = { hash: !!snap.hash, sticky: !!snap.sticky, ratelimit: !!snap.ratelimit };
    card.hidden = !(shown.hash || shown.sticky || shown.ratelimit);
    for (const [name, on] of Object.entries(shown)) parts[name].hidden = !on;
    if (shown.hash) renderHash(parts.hash, snap.hash, snap.backends);
    if (shown.sticky) renderSticky(parts.sticky, snap.sticky);
    if (shown.ratelimit) renderLimit(parts.ratelimit, snap.ratelimit);
  }

  document.addEventListener("txlb:snapshot", (e) => render(e.detail));
})();

// txlb dashboard: the fleet card ([fleet], txlb.fleet).
//
// Reads the "fleet" object of each snapshot (app.js dispatches every one as
// a "txlb:snapshot" event on the document) and shows this node and each
// peer: its load, when it was last heard from, and its requests in flight
// on each backend (by address, named as this node names them), then the
// fleet's total per backend, and the state of the sharing itself ("fleet:
// local only" while Redis cannot be reached).  Hidden without [fleet].
//
// Safety: everything from the server goes in with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const ago = (seconds) =>
    seconds < 1 ? `${Math.round(seconds * 1000)} ms ago` : `${seconds.toFixed(1)} s ago`;
  const clock = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false });

  const STATUS = {
    sharing: ["good", "fleet: sharing"],
    "local only": ["bad", "fleet: local only"],
    connecting: ["warn", "fleet: connecting"],
  };

  function render(snap) {
    const card = $("fleet");
    if (!card) return;
    const fleet = snap.fleet;
    if (!fleet) {
      card.hidden = true;
      return;
    }
    card.hidden = false;
    const [kind, words] = STATUS[fleet.status] || ["warn", `fleet: ${fleet.status}`];
    const pill = $("fleet-status");
    pill.className = `fleet-status ${kind}`;
    pill.textContent = words;
    const peers = fleet.nodes.length - 1;
    let note = `node ${fleet.node} · ${fleet.store} · every ${Math.round(fleet.interval * 1000)} ms · ${peers} peer${peers === 1 ? "" : "s"}`;
    if (fleet.status === "local only") {
      note = `balancing on this node's own counts since ${clock(fleet.since)}: ${fleet.error || "store unreachable"}`;
    }
    $("fleet-note").textContent = note;

    // Columns: one per backend of this node, by address.
    const backends = fleet.backends;
    const head = $("fleet-head");
    head.replaceChildren(el("th", null, "Node"), el("th", "num", "Load"), el("th", null, "Last heard"));
    for (const b of backends) {
      const th = el("th", "num", b.name);
      th.title = b.address;
      head.append(th);
    }
    const body = $("fleet-body");
    body.replaceChildren();
    for (const node of fleet.nodes) {
      const tr = el("tr", node.self ? "is-self" : "");
      const name = el("td");
      name.append(el("strong", null, node.node));
      if (node.self) name.append(el("span", "muted", " (this node)"));
      tr.append(name, el("td", "num", node.load), el("td", "muted", node.self ? "now" : ago(node.age)));
      for (const b of backends) {
        const n = node.backends[b.address] || 0;
        const ejected = node.ejected[b.address];
        const td = el("td", `num${n ? "" : " muted"}`, ejected ? `${n} ⊘` : n);
        if (ejected) td.title = `ejected by ${node.node}: ${ejected.cause}`;
        tr.append(td);
      }
      body.append(tr);
    }
    const total = el("tr", "is-total");
    const load = fleet.nodes.reduce((sum, n) => sum + n.load, 0);
    total.append(el("td", null, "Fleet total"), el("td", "num", load), el("td"));
    for (const b of backends) {
      const td = el("td", "num", b.total);
      td.title = `${b.local} here + ${b.peers} from peers${b.ejected_by ? `; ejected by ${b.ejected_by}` : ""}`;
      total.append(td);
    }
    body.append(total);

    const departed = $("fleet-departed");
    departed.replaceChildren();
    for (const d of fleet.departed.slice().reverse().slice(0, 5)) {
      departed.append(el("li", null, `${clock(d.time)} ${d.node} ${d.why}`));
    }
  }

  document.addEventListener("txlb:snapshot", (e) => render(e.detail));
})();

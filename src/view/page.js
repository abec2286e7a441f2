// arduino view: draws the mesh from /mesh.json and follows /events, the view server's feed of
// every node's events. Built to keep up with thousands of events a second: an event only
// updates counters; the DOM is touched at most once per animation frame, the sidebar keeps a
// bounded number of rows, and the dots on the edges are a sample of the traffic.
"use strict";

const MAX_ROWS = 200;        // rows the sidebar shows
const KEEP = 2000;           // events kept to refill the sidebar when a filter changes
const ROWS_PER_FRAME = 30;   // rows added per frame at most; the rest are counted
const DOTS_PER_EDGE = 10;    // dots in flight per edge and direction
const DOT_GAP_MS = 60;       // at most one new dot per edge and direction this often
const TRAVEL_MS = 700;       // how long a dot takes along its edge
const ACTIVE_MS = 3000;      // a node that handled a message this recently may be sending
const NODE_W = 230, NODE_H = 118, GAP_X = 170, GAP_Y = 50;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const nodes = new Map();     // name -> node
const edges = new Map();     // from + "\0" + to -> edge
const byPeer = new Map();    // from + "\0" + peer (as the `to` list says it) -> edge
const clients = new Map();   // node + "\0" + client -> edge, or null for a client from outside
const kept = [];             // the last KEEP events, oldest first
let fresh = [];              // events not yet offered to the sidebar, oldest first
let total = 0, missed = 0, windowCount = 0, windowStart = performance.now(), rate = 0;
let paused = false, pausedCount = 0, sampledAway = 0;
let filterNode = "", filterKind = "";
let dirtyHeader = true;

// What the page measures of itself, read by the browser test (and anyone curious).
const stats = { frames: [], lagMs: [], handled: 0, lastFrame: 0 };
window.arduinoView = { stats, nodes, edges };

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function short(text, n) {
  text = String(text ?? "");
  return text.length > n ? text.slice(0, n - 1) + "\u2026" : text;
}

// ---- the drawing ---------------------------------------------------------------------------

function layout(mesh) {
  const rank = new Map(mesh.nodes.map((n) => [n.name, 0]));
  // Longest path from the sources; the mesh has no cycles, and the bound keeps a bad file safe.
  for (let round = 0; round < mesh.nodes.length; round++) {
    let moved = false;
    for (const l of mesh.links) {
      const r = (rank.get(l.from) ?? 0) + 1;
      if (rank.has(l.to) && rank.get(l.to) < r) { rank.set(l.to, r); moved = true; }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const n of mesh.nodes) (columns[rank.get(n.name)] ??= []).push(n.name);
  const at = new Map();
  const tallest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  columns.forEach((column, x) => {
    if (!column) return;
    const offset = ((tallest - column.length) * (NODE_H + GAP_Y)) / 2;
    column.forEach((name, y) => at.set(name, { x: 20 + x * (NODE_W + GAP_X), y: 20 + offset + y * (NODE_H + GAP_Y) }));
  });
  const svg = $("mesh");
  svg.setAttribute("viewBox", `0 0 ${40 + columns.length * (NODE_W + GAP_X) - GAP_X} ${40 + tallest * (NODE_H + GAP_Y) - GAP_Y}`);
  return at;
}

function draw(mesh) {
  $("mesh-path").textContent = mesh.path;
  const at = layout(mesh);
  const select = $("filter-node");
  for (const def of mesh.nodes) {
    const { x, y } = at.get(def.name);
    const g = el("g", { class: "node", "data-node": def.name, "data-state": def.state, transform: `translate(${x},${y})` }, $("nodes"));
    el("rect", { class: "box", width: NODE_W, height: NODE_H }, g);
    const text = (cls, tx, ty) => el("text", { class: cls, x: tx, y: ty }, g);
    text("name", 12, 22).textContent = short(def.name, 22);
    const state = text("state", NODE_W - 12, 20);
    const sub = text("sub mono", 12, 40);
    sub.textContent = def.external ? "outside the mesh" : short(`${def.sketch} \u00b7 ${def.port ? def.host + ":" + def.port : "no port"}`, 34);
    const input = text("mono", 12, 60);
    const ack = text("mono", 12, 78);
    const counts = text("counts", 12, 108);
    const bits = el("g", { transform: `translate(12, 86)` }, g);
    const buzz = def.sketch === "buzzer" ? el("text", { class: "buzz", x: NODE_W - 30, y: 66 }, g) : null;
    if (buzz) buzz.textContent = "\u266b";
    const node = {
      def, state: def.state, reason: def.reason, g, stateText: state, input, ack, counts, bits, buzz,
      messages: 0, acks: 0, errors: 0, clients: 0, fromOutside: 0, lastInput: null, lastAck: null,
      lastMessageAt: -Infinity, lastInputAt: -Infinity, sent: [], x, y, inEdges: [], outEdges: [],
      rateCount: 0, rate: 0, dirty: true,
    };
    nodes.set(def.name, node);
    if (!def.external) select.appendChild(new Option(def.name, def.name));
  }
  for (const l of mesh.links) {
    const from = nodes.get(l.from), to = nodes.get(l.to);
    if (!from || !to) continue;
    const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
    const g = el("g", { class: "edge", "data-from": l.from, "data-to": l.to }, $("edges"));
    el("line", { x1, y1, x2: x2 - 2, y2, "marker-end": "url(#arrow)" }, g);
    const label = el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 10 }, g);
    const totals = el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 + 20 }, g);
    const fails = el("text", { class: "fails", x: (x1 + x2) / 2, y: (y1 + y2) / 2 + 34 }, g);
    const edge = {
      from, to, g, label, totals, fails, x1, y1, x2, y2, messages: 0, acks: 0, failures: 0, rateCount: 0,
      rate: 0, down: false, failedAt: -Infinity, micros: null, dirty: true,
      dots: { msg: [], ack: [], fail: [] }, lastDot: { msg: -Infinity, ack: -Infinity, fail: -Infinity },
    };
    edges.set(l.from + "\0" + l.to, edge);
    byPeer.set(l.from + "\0" + (l.peer ?? l.to), edge);
    byPeer.set(l.from + "\0" + l.to, edge);
    from.outEdges.push(edge);
    to.inEdges.push(edge);
  }
}

// A dot travelling along `edge`: a message forward, an ack or a failure back.
function launch(edge, kind, now) {
  if (now - edge.lastDot[kind] < DOT_GAP_MS) return;
  const pool = edge.dots[kind];
  let dot = pool.find((d) => !d.live);
  if (!dot) {
    if (pool.length >= DOTS_PER_EDGE) return;
    dot = { circle: el("circle", { r: kind === "fail" ? 6 : 4.5, class: kind, visibility: "hidden" }, $("dots")), live: false };
    pool.push(dot);
  }
  edge.lastDot[kind] = now;
  dot.live = true;
  dot.start = now;
  dot.circle.setAttribute("visibility", "visible");
}

function moveDots(now) {
  for (const edge of edges.values()) {
    for (const kind in edge.dots) {
      for (const dot of edge.dots[kind]) {
        if (!dot.live) continue;
        let p = (now - dot.start) / TRAVEL_MS;
        if (p >= 1) { dot.live = false; dot.circle.setAttribute("visibility", "hidden"); continue; }
        if (kind !== "msg") p = 1 - p;
        dot.circle.setAttribute("cx", edge.x1 + (edge.x2 - edge.x1) * p);
        dot.circle.setAttribute("cy", edge.y1 + (edge.y2 - edge.y1) * p);
      }
    }
  }
}

// ---- events --------------------------------------------------------------------------------

// Which of `node`'s incoming edges a message from `client` came along. A peer in the node's
// own process is named as the client: that edge. Otherwise it is decided at the client's first
// message, from the senders that were busy then (a node without a port is not watched, so it
// may always be the sender); null for a client from outside the mesh.
function edgeOf(node, client, now) {
  const key = node.def.name + "\0" + client;
  if (clients.has(key)) return clients.get(key);
  const named = node.inEdges.find(e => e.from.def.name === client);
  if (named) { clients.set(key, named); return named; }
  let best = null, bestAt = -Infinity;
  for (const e of node.inEdges) {
    const src = e.from;
    const busyAt = src.state === "unwatched" ? now - ACTIVE_MS / 2 : src.lastMessageAt;
    if (now - busyAt < ACTIVE_MS && busyAt > bestAt) { best = e; bestAt = busyAt; }
  }
  if (clients.size > 10000) clients.clear();
  clients.set(key, best);
  return best;
}

function handle(ev, now) {
  total++;
  windowCount++;
  const node = nodes.get(ev.node);
  switch (ev.event) {
    case "node_up":
    case "node_down":
      if (node) { node.state = ev.event === "node_up" ? "up" : "down"; node.reason = ev.reason; node.dirty = true; }
      if (node && ev.event === "node_down") {
        for (const key of clients.keys()) if (key.startsWith(ev.node + "\0")) clients.delete(key);
      }
      break;
    case "stopping":
      if (node) { node.state = "stopping"; node.dirty = true; }
      break;
    case "client_up":
      if (node) { node.clients++; node.dirty = true; }
      break;
    case "client_down":
      if (node) {
        node.clients = Math.max(0, node.clients - 1);
        clients.delete(ev.node + "\0" + ev.client);
        node.dirty = true;
      }
      break;
    case "message":
      if (node) {
        node.messages++;
        node.rateCount++;
        node.lastInput = ev.text;
        node.lastInputAt = now;
        node.lastMessageAt = now;
        node.dirty = true;
        const edge = edgeOf(node, ev.client, now);
        if (edge) {
          edge.messages++;
          edge.rateCount++;
          edge.dirty = true;
          const sent = edge.from.sent;
          sent.push(ev.text);
          if (sent.length > 8) sent.shift();
          edge.from.dirty = true;
          launch(edge, "msg", now);
        } else {
          node.fromOutside++;
        }
      }
      break;
    case "ack":
      if (node) {
        node.acks++;
        node.lastAck = ev.ack;
        if (typeof ev.ack === "string" && ev.ack.startsWith("error: ")) node.errors++;
        node.dirty = true;
        const edge = clients.get(ev.node + "\0" + ev.client);
        if (edge) { edge.acks++; edge.dirty = true; launch(edge, "ack", now); }
      }
      break;
    case "peer_ack": {
      const edge = byPeer.get(ev.node + "\0" + ev.peer);
      if (edge && typeof ev.micros === "number") { edge.micros = ev.micros; edge.dirty = true; }
      break;
    }
    case "peer_up":
    case "peer_down": {
      const edge = byPeer.get(ev.node + "\0" + ev.peer);
      if (edge) { edge.down = ev.event === "peer_down"; edge.dirty = true; }
      break;
    }
    case "send_failed": {
      const edge = byPeer.get(ev.node + "\0" + ev.peer);
      if (edge) { edge.failures++; edge.failedAt = now; edge.dirty = true; launch(edge, "fail", now); }
      break;
    }
    case "lagged":
      missed += Number(ev.missed) || 0;
      dirtyHeader = true;
      break;
  }
  if (typeof ev.time === "string") {
    const lag = Date.now() - Date.parse(ev.time);
    if (lag >= 0 && lag < 3600e3) stats.lastLag = lag;
  }
  kept.push(ev);
  if (kept.length > KEEP * 1.5) kept.splice(0, kept.length - KEEP);
  fresh.push(ev);
  // What arrives between two frames beyond what the sidebar could show is only counted.
  if (fresh.length > KEEP) { sampledAway += fresh.length - KEEP; fresh.splice(0, fresh.length - KEEP); }
  stats.handled++;
}

// ---- the sidebar ---------------------------------------------------------------------------

function passes(ev) {
  return (!filterNode || ev.node === filterNode) && (!filterKind || ev.event === filterKind);
}

function describe(ev) {
  switch (ev.event) {
    case "message": return `${ev.channel ?? ""} < ${ev.text ?? ""}`;
    case "ack": return `> ${ev.ack ?? ""}${typeof ev.micros === "number" ? ` (${ev.micros} us)` : ""}`;
    case "peer_ack": return `${ev.peer} > ${ev.ack ?? ""} (${ev.micros} us)`;
    case "send_failed": return `to ${ev.peer}: ${ev.reason ?? ""}`;
    case "peer_up": return `link to ${ev.peer} up (${ev.url ?? ""})`;
    case "peer_down": return `link to ${ev.peer} down: ${ev.reason ?? ""}`;
    case "client_up": return `${ev.client} joined on ${ev.channel ?? ""}`;
    case "client_down": return `${ev.client} ${ev.normal ? "left" : "dropped"}: ${ev.reason ?? ""}`;
    case "client_refused": return `refused ${ev.client}: ${ev.reason ?? ""}`;
    case "listening": return `listening on ${ev.addr ?? ""}`;
    case "node_up": return "feed followed";
    case "node_down": return `feed lost: ${ev.reason ?? ""}`;
    case "lagged": return `missed ${ev.missed} events${ev.reason ? ` (${ev.reason})` : ""}`;
    default: return "";
  }
}

function row(ev) {
  const li = document.createElement("li");
  li.dataset.node = ev.node ?? "";
  li.dataset.event = ev.event ?? "";
  if (ev.event === "ack" && typeof ev.ack === "string" && ev.ack.startsWith("error: ")) li.className = "error";
  const part = (cls, text) => { const s = document.createElement("span"); s.className = cls; s.textContent = text; li.append(s, " "); };
  part("t", typeof ev.time === "string" ? ev.time.slice(11, 23) : "");
  part("n", ev.node || "view");
  part("k", ev.event ?? "?");
  li.append(short(describe(ev), 300));
  li.title = JSON.stringify(ev);
  return li;
}

function moreRow(count) {
  const li = document.createElement("li");
  li.className = "more";
  li.textContent = `\u2026 ${count} more not shown (too fast to read)`;
  return li;
}

function renderRows() {
  const list = $("rows");
  if (paused) {
    pausedCount += fresh.filter(passes).length;
    fresh = [];
    $("debug-status").textContent = `paused: ${pausedCount} new events not shown`;
    return;
  }
  if (!fresh.length) return;
  const shown = fresh.filter(passes);
  fresh = [];
  const skipped = Math.max(0, shown.length - ROWS_PER_FRAME) + sampledAway;
  sampledAway = 0;
  const frag = document.createDocumentFragment();
  for (let i = shown.length - 1; i >= Math.max(0, shown.length - ROWS_PER_FRAME); i--) frag.appendChild(row(shown[i]));
  if (skipped > 0) frag.appendChild(moreRow(skipped));
  list.prepend(frag);
  while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
}

function refill() {
  const list = $("rows");
  list.textContent = "";
  const frag = document.createDocumentFragment();
  for (let i = kept.length - 1; i >= 0 && frag.childElementCount < MAX_ROWS; i--) {
    if (passes(kept[i])) frag.appendChild(row(kept[i]));
  }
  list.append(frag);
  fresh = [];
}

// ---- each frame ----------------------------------------------------------------------------

function renderNode(node, now) {
  const buzzing = node.buzz && node.lastInput === "1" && now - node.lastInputAt < 1500;
  node.g.classList.toggle("buzzing", !!buzzing);
  if (!node.dirty) return;
  node.dirty = false;
  node.g.dataset.state = node.state;
  node.stateText.textContent = node.state === "unwatched" ? "no port" : node.state;
  node.g.querySelector("rect.box").setAttribute("aria-description", node.reason ?? "");
  if (node.def.external) return;
  if (node.state === "unwatched") {
    // Nothing of its own is heard: what it sent is seen at its peers.
    node.input.textContent = "seen through its peers";
    node.ack.textContent = "";
    renderSent(node);
    node.counts.textContent = "";
    const out = node.outEdges.reduce((sum, e) => sum + e.messages, 0);
    const t = el("tspan", { "data-count": "sent" }, node.counts);
    t.textContent = String(out);
    node.counts.append(" sent");
    return;
  }
  node.input.textContent = "in  " + (node.lastInput === null ? "-" : short(node.lastInput, 26));
  node.ack.textContent = "ack " + (node.lastAck === null ? "-" : short(node.lastAck, 26));
  node.counts.textContent = "";
  const count = (name, value, label) => {
    const t = el("tspan", { "data-count": name }, node.counts);
    t.textContent = String(value);
    node.counts.append(` ${label}  `);
  };
  count("messages", node.messages, "msgs");
  count("acks", node.acks, "acks");
  count("errors", node.errors, "err");
  count("clients", node.clients, "conn");
  count("rate", node.rate.toFixed(0), "/s");
  renderSent(node);
}

function renderSent(node) {
  // The last things this node sent: lit bits for 0/1 texts, as an iopin's output reads.
  node.bits.textContent = "";
  if (node.sent.length && node.sent.every((text) => text === "0" || text === "1")) {
    node.sent.forEach((text, i) => {
      el("rect", { class: text === "1" ? "bit on" : "bit", x: i * 13, y: 0, width: 10, height: 10, rx: 2 }, node.bits);
    });
    el("text", { x: node.sent.length * 13 + 4, y: 9, class: "sub" }, node.bits).textContent = "sent";
  } else if (node.sent.length) {
    el("text", { x: 0, y: 9, class: "sub mono" }, node.bits).textContent = "out " + short(node.sent[node.sent.length - 1], 24);
  }
}

function renderEdge(edge, now) {
  const failing = now - edge.failedAt < 1000;
  edge.g.classList.toggle("failed", failing);
  if (!edge.dirty) return;
  edge.dirty = false;
  edge.g.classList.toggle("down", edge.down);
  edge.g.classList.toggle("busy", edge.rate > 0);
  edge.g.dataset.messages = edge.messages;
  edge.g.dataset.acks = edge.acks;
  edge.g.dataset.failures = edge.failures;
  const latency = edge.micros === null ? "" : edge.micros < 10000 ? ` \u00b7 ${edge.micros} us` : ` \u00b7 ${(edge.micros / 1000).toFixed(1)} ms`;
  edge.label.textContent = `${edge.rate.toFixed(0)} msg/s${latency}`;
  edge.totals.textContent = `${edge.messages} sent \u00b7 ${edge.acks} acked`;
  edge.fails.textContent = edge.failures ? `${edge.failures} failed` : "";
}

function frame(now) {
  const started = performance.now();
  if (stats.lastFrame) {
    stats.frames.push(now - stats.lastFrame);
    if (stats.frames.length > 1200) stats.frames.splice(0, 600);
  }
  stats.lastFrame = now;
  if (now - windowStart >= 1000) {
    const seconds = (now - windowStart) / 1000;
    rate = windowCount / seconds;
    windowCount = 0;
    windowStart = now;
    for (const n of nodes.values()) { n.rate = n.rateCount / seconds; n.rateCount = 0; n.dirty = true; }
    for (const e of edges.values()) { e.rate = e.rateCount / seconds; e.rateCount = 0; e.dirty = true; }
    dirtyHeader = true;
    if (stats.lastLag !== undefined) { stats.lagMs.push(stats.lastLag); if (stats.lagMs.length > 600) stats.lagMs.shift(); }
  }
  if (dirtyHeader) {
    $("rate").textContent = rate.toFixed(0);
    $("total").textContent = String(total);
    $("missed").textContent = String(missed);
    $("missed-box").hidden = missed === 0;
    dirtyHeader = false;
  }
  for (const n of nodes.values()) renderNode(n, now);
  for (const e of edges.values()) renderEdge(e, now);
  moveDots(now);
  renderRows();
  stats.work = performance.now() - started;
  requestAnimationFrame(frame);
}

// ---- wiring --------------------------------------------------------------------------------

function follow() {
  const source = new EventSource("/events");
  const feed = $("feed");
  source.onopen = () => { feed.dataset.state = "open"; feed.textContent = "live"; };
  source.onerror = () => { feed.dataset.state = "lost"; feed.textContent = "view server lost, retrying..."; };
  source.onmessage = (message) => {
    const now = performance.now();
    for (const line of message.data.split("\n")) {
      let ev;
      try { ev = JSON.parse(line); } catch { continue; }
      if (ev && typeof ev === "object") handle(ev, now);
    }
    dirtyHeader = true;
  };
}

$("filter-node").onchange = (e) => { filterNode = e.target.value; refill(); };
$("filter-kind").onchange = (e) => { filterKind = e.target.value; refill(); };
$("pause").onclick = (e) => {
  paused = !paused;
  e.target.setAttribute("aria-pressed", String(paused));
  e.target.textContent = paused ? "resume" : "pause";
  if (!paused) { pausedCount = 0; $("debug-status").textContent = ""; refill(); }
};
$("clear").onclick = () => { kept.length = 0; fresh = []; $("rows").textContent = ""; };

fetch("/mesh.json")
  .then((r) => r.json())
  .then((mesh) => { draw(mesh); follow(); requestAnimationFrame(frame); })
  .catch((error) => { $("feed").dataset.state = "lost"; $("feed").textContent = `cannot read /mesh.json: ${error}`; });

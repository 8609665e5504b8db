// The pybroadway dashboard: draws each snapshot the node streams (server-sent events).
// Hand-written SVG, no library, nothing fetched from another origin.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 190, BOX_H = 66, COL_GAP = 64, ROW_GAP = 14, PAD = 8;

function count(n) { return Math.round(n).toLocaleString("en-US"); }

function rate(r) {
  if (r >= 1e6) return (r / 1e6).toFixed(1) + "M/s";
  if (r >= 1e3) return (r / 1e3).toFixed(1) + "k/s";
  return (r >= 10 || r === 0 ? Math.round(r) : r.toFixed(1)) + "/s";
}

function colour(load) {
  if (load === null || load === undefined) return "#5b6b86";
  const hue = Math.round(130 * (1 - Math.min(1, Math.max(0, load))));
  return `hsl(${hue}, 60%, 38%)`;
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, value, cls) {
  const node = el("text", { x, y, class: cls || "" }, parent);
  node.textContent = value;
  return node;
}

function setText(id, value) { document.getElementById(id).textContent = value; }

// One column per stage kind; every box of a column feeds every box of the next, but a
// batcher feeds only its own batch processors.
function columns(topology) {
  const cols = [];
  cols.push(topology.producers.map((p) => ({
    kind: "producer", name: p.name, title: p.name.split(".").pop(),
    lines: [p.kind, `buffer ${count(p.queued)}`],
    rate: p.rate, load: p.load })));
  cols.push(topology.processors.map((p) => ({
    kind: "processor", name: p.name, concurrency: p.concurrency,
    title: `${p.name} ×${p.concurrency}`,
    lines: [p.offloaded ? "in the workers" : `queue ${count(p.queued)}`,
            p.load === null ? "" : `busy ${Math.round(100 * p.load)}%`],
    rate: p.rate, load: p.load })));
  if (topology.with_workers) {
    cols.push(topology.workers.length ? topology.workers.map((w) => ({
      kind: "worker", name: w.node, title: w.node.split("@")[0], lines: [`host ${w.host}`,
      `in flight ${count(w.queued)}`], rate: w.rate, load: null })) :
      [{ kind: "worker", name: "", title: "no worker", lines: ["waiting for workers"], rate: 0,
         load: null, placeholder: true }]);
  }
  if (topology.batchers.length) {
    cols.push(topology.batchers.map((b) => ({
      kind: "batcher", name: b.name, title: `batcher ${b.name}`,
      lines: [`batch size ${b.batch_size === null ? "?" : count(b.batch_size)}`,
              `queue ${count(b.queued)}`], rate: null, load: null })));
    cols.push(topology.batchers.map((b) => ({
      kind: "batch_processor", name: b.name, concurrency: b.concurrency,
      title: `${b.name} ×${b.concurrency}`,
      lines: ["batch processors", `busy ${Math.round(100 * (b.load || 0))}%`],
      rate: b.rate, load: b.load, pair: true })));
  }
  return cols;
}

function drawGraph(topology) {
  const svg = document.getElementById("graph");
  const cols = columns(topology);
  const rows = Math.max(1, ...cols.map((c) => c.length));
  const width = PAD * 2 + cols.length * BOX_W + (cols.length - 1) * COL_GAP;
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * ROW_GAP;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.maxWidth = `${width}px`;
  svg.replaceChildren();
  const place = cols.map((col, i) => col.map((box, j) => {
    const offset = (height - (col.length * BOX_H + (col.length - 1) * ROW_GAP)) / 2;
    return { x: PAD + i * (BOX_W + COL_GAP), y: offset + j * (BOX_H + ROW_GAP), box };
  }));
  for (let i = 0; i + 1 < place.length; i++) {
    for (const [a, from] of place[i].entries()) {
      for (const [b, to] of place[i + 1].entries()) {
        if (to.box.pair && a !== b) continue;
        const x1 = from.x + BOX_W, y1 = from.y + BOX_H / 2, x2 = to.x, y2 = to.y + BOX_H / 2;
        const mid = (x1 + x2) / 2;
        el("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }, svg);
      }
    }
  }
  for (const col of place) {
    for (const { x, y, box } of col) {
      const g = el("g", { class: "stage", "data-kind": box.kind, "data-name": box.name,
                          transform: `translate(${x},${y})` }, svg);
      if (box.concurrency !== undefined) g.setAttribute("data-concurrency", box.concurrency);
      el("rect", { width: BOX_W, height: BOX_H, fill: colour(box.load) }, g);
      el("title", {}, g).textContent = box.name || box.title;
      text(g, 10, 18, box.title.length > 17 ? box.title.slice(0, 16) + "…" : box.title, "title");
      text(g, 10, 35, box.lines[0] || "");
      text(g, 10, 52, box.lines[1] || "");
      if (box.rate !== null && !box.placeholder) {
        const r = text(g, BOX_W - 10, 18, rate(box.rate), "rate");
        r.setAttribute("text-anchor", "end");
      }
    }
  }
}

function drawChart(history, now) {
  const svg = document.getElementById("chart");
  const W = 900, H = 180, L = 60, B = 20, span = 300;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const top = Math.max(1, ...history.map((p) => Math.max(p[1], p[2])));
  const x = (t) => L + (W - L - 4) * (1 - Math.min(span, now - t) / span);
  const y = (v) => (H - B) - (H - B - 8) * (v / top);
  for (const f of [0, 0.5, 1]) {
    el("line", { class: "gridline", x1: L, x2: W, y1: y(top * f), y2: y(top * f) }, svg);
    const label = text(svg, L - 6, y(top * f) + 4, rate(top * f), "axis");
    label.setAttribute("text-anchor", "end");
  }
  for (const m of [5, 4, 3, 2, 1, 0]) {
    const label = text(svg, x(now - 60 * m), H - 4, m ? `-${m} min` : "now", "axis");
    label.setAttribute("text-anchor", m === 5 ? "start" : m ? "middle" : "end");
  }
  for (const [index, cls] of [[1, "ok-line"], [2, "bad-line"]]) {
    const points = history.filter((p) => now - p[0] <= span)
      .map((p) => `${x(p[0]).toFixed(1)},${y(p[index]).toFixed(1)}`).join(" ");
    if (points) el("polyline", { class: cls, points }, svg);
  }
}

function fillTable(id, block, cells) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const row of (block && block.rows) || []) {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells(row)) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      if (value instanceof Node) td.appendChild(value); else td.textContent = value;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  const counter = document.getElementById(`${id}-count`);
  if (counter) {
    const n = block ? block.count : 0, shown = block ? block.rows.length : 0;
    counter.textContent = n > shown ? `${count(shown)} of ${count(n)}` : count(n);
  }
}

function tag(value, cls) {
  const span = document.createElement("span");
  span.className = "tag " + (cls || "");
  span.textContent = value;
  return span;
}

function draw(snapshot) {
  const t = snapshot.totals;
  setText("pipeline", snapshot.pipeline);
  setText("node", snapshot.node || "");
  setText("handled", count(t.handled));
  setText("failed", count(t.failed));
  setText("dropped", count(t.dropped));
  setText("in_flight", count(t.in_flight));
  setText("rate", rate(t.rate));
  drawGraph(snapshot.topology);
  drawChart(snapshot.history, snapshot.time);
  const e = snapshot.erlang || {};
  fillTable("nodes", e.nodes, (r) => [[r.name], [tag(r.hidden ? "hidden" : "visible")],
                                      [tag(r.tls ? "TLS" : "TCP", r.tls ? "tls" : "")]]);
  fillTable("clients", e.clients, (r) => [[r.pid], [r.node]]);
  fillTable("subscriptions", e.subscriptions, (r) => [[r.direction === "in" ? "←" : "→"],
    [r.stage], [r.peer], [r.node], [count(r.demand), "num"]]);
  fillTable("names", e.global_names, (r) => [[r.name], [r.pid]]);
  fillTable("failures", { rows: snapshot.failures, count: snapshot.failures.length },
    (r) => [[new Date(r.time * 1000).toLocaleTimeString("en-GB")], [r.stage], [r.error],
            [r.data]]);
}

function connect() {
  const token = new URLSearchParams(location.search).get("token");
  const url = "/api/stream" + (token ? "?token=" + encodeURIComponent(token) : "");
  const status = document.getElementById("status");
  const source = new EventSource(url);
  source.onopen = () => { status.textContent = "live"; status.className = "status"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "status off"; };
  source.onmessage = (event) => {
    status.textContent = "live"; status.className = "status";
    draw(JSON.parse(event.data));
  };
}

connect();

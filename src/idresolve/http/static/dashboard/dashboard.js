// idresolve dashboard: plain SVG and DOM, fed by Server-Sent Events from the dashboard process.
// Everything the page shows comes from /api/topology (once), /api/events (a snapshot a second),
// /api/history (a node's last minutes) and /api/resolve; controls POST to /api/faults, /api/heal, /api/latency.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const W = 1000, H = 720, PAD = 36;
// The map is stretched around Shandong (piecewise linear in longitude and latitude) so that its ~60 nodes
// have room beside the national top-level nodes; the order of places is kept.
const XB = [[103.5, 0], [115.2, 0.32], [122.8, 1]];
const YB = [[21.5, 1], [34.6, 0.62], [37.8, 0.08], [41, 0]];
const ROLE_ORDER = ["top", "recursive", "secondary", "mirror", "enterprise"];
const RADIUS = {top: 9, recursive: 9, secondary: 7, mirror: 6, enterprise: 5};

let topo = null, snapshot = null, selected = null, trace = null, auth = null;
const pos = {}, byName = {}, history = {};

const $ = (s) => document.querySelector(s);
function el(tag, attrs = {}, parent = null, text = null) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function interp(v, bps) {
  if (v <= bps[0][0]) return bps[0][1];
  for (let i = 1; i < bps.length; i++) {
    const [x0, y0] = bps[i - 1], [x1, y1] = bps[i];
    if (v <= x1) return y0 + (y1 - y0) * (v - x0) / (x1 - x0);
  }
  return bps[bps.length - 1][1];
}
function project(lat, lon) { return [PAD + interp(lon, XB) * (W - 2 * PAD), PAD + interp(lat, YB) * (H - 2 * PAD)]; }
const fmt = (v, d = 1) => (v === null || v === undefined) ? "" : (typeof v === "number" ? v.toFixed(d) : String(v));

// -- layout -----------------------------------------------------------------------------------------------
function layout() {
  const groups = {};
  for (const n of topo.nodes) (groups[n.location] = groups[n.location] || []).push(n);
  for (const [loc, ns] of Object.entries(groups)) {
    ns.sort((a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role) || a.name.localeCompare(b.name));
    const [cx, cy] = project(ns[0].lat, ns[0].lon);
    const r = ns.length === 1 ? 0 : 8 + 3.2 * ns.length;
    ns.forEach((n, i) => {
      const a = -Math.PI / 2 + 2 * Math.PI * i / ns.length;
      pos[n.name] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
    });
    groups[loc].center = [cx, cy];
  }
  return groups;
}

function drawMap() {
  const svg = $("#map");
  const defs = el("defs", {}, svg);
  const m = el("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse"}, defs);
  el("path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#2e86c1"}, m);
  const regions = $("#regions");
  const [x0, y0] = project(37.9, 115.2), [x1, y1] = project(34.6, 122.8);
  el("rect", {x: x0 - 12, y: y0 - 30, width: x1 - x0 + 24, height: y1 - y0 + 46, rx: 10, class: "region"}, regions);
  el("text", {x: x1 + 6, y: y1 + 12, "text-anchor": "end", class: "region-label"}, regions, "Shandong (enlarged)");
  const groups = layout();
  for (const [loc, ns] of Object.entries(groups)) {
    if (ns.length > 1 || ns[0].role !== "top") {
      const [cx, cy] = ns.center;
      el("text", {x: cx, y: cy + 4, "text-anchor": "middle", class: "city"}, regions, loc);
    }
  }
  const links = $("#static-links");
  for (const n of topo.nodes) {
    const tie = n.role === "enterprise" ? n.parent : n.mirrorOf;
    if (tie && pos[tie]) {
      const [ax, ay] = pos[n.name], [bx, by] = pos[tie];
      el("line", {x1: ax, y1: ay, x2: bx, y2: by, class: n.role === "mirror" ? "mirror-link" : "static-link"}, links);
    }
  }
  const layer = $("#nodes");
  for (const n of topo.nodes) {
    byName[n.name] = n;
    const [x, y] = pos[n.name];
    const g = el("g", {class: `node ${n.role}`, "data-node": n.name, "data-state": "unknown", transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`}, layer);
    const r = RADIUS[n.role] || 6;
    el("circle", {r: r + 4, class: "ring"}, g);
    el("circle", {r: r, class: "halo"}, g);
    el("circle", {r: r, class: "body"}, g);
    el("path", {d: `M${-r} ${-r} L${r} ${r} M${r} ${-r} L${-r} ${r}`, class: "cross"}, g);
    el("title", {}, g, `${n.name} (${n.role}${n.prefix ? ", " + n.prefix : ""}) at ${n.location}`);
    if (n.role === "top" || n.role === "recursive") {
      el("text", {x: r + 3, y: 4}, g, n.name);
    }
    g.addEventListener("click", () => select(n.name));
  }
}

// -- live figures ------------------------------------------------------------------------------------------
function rateClass(r) { return r < 1 ? "#b3b6b7" : r < 10 ? "#58d68d" : r < 100 ? "#f4d03f" : r < 1000 ? "#eb984e" : "#e74c3c"; }

function drawTraffic() {
  const layer = $("#traffic");
  layer.replaceChildren();
  for (const [src, f] of Object.entries(snapshot.nodes)) {
    for (const [dst, rate] of Object.entries(f.links || {})) {
      if (!pos[src] || !pos[dst]) continue;
      const [ax, ay] = pos[src], [bx, by] = pos[dst];
      // A slight curve, so that the two directions of a link do not hide each other.
      const mx = (ax + bx) / 2 + (by - ay) * 0.08, my = (ay + by) / 2 - (bx - ax) * 0.08;
      el("path", {d: `M${ax} ${ay} Q${mx} ${my} ${bx} ${by}`, class: "traffic", stroke: rateClass(rate),
        "stroke-width": (1 + Math.log10(1 + rate)).toFixed(2), "data-link": `${src}>${dst}`}, layer);
    }
  }
}

function faultsOf(control) {
  const slow = new Set(), parted = new Set(), links = [];
  for (const f of (control && control.faults) || []) {
    if (f.kind === "slow") f.nodes.forEach((n) => slow.add(n));
    if (f.kind === "partition") f.nodes.forEach((n) => parted.add(n));
    if (f.kind === "link") links.push(f.nodes);
  }
  return {slow, parted, links, down: new Set((control && control.down) || [])};
}

function drawNodes() {
  const fl = faultsOf(snapshot.control);
  for (const g of document.querySelectorAll("#nodes .node")) {
    const name = g.dataset.node, f = snapshot.nodes[name] || {};
    const down = f.up === false || fl.down.has(name);
    g.dataset.state = down ? "down" : "up";
    g.classList.toggle("down", down);
    g.classList.toggle("slow", fl.slow.has(name));
    g.classList.toggle("partitioned", fl.parted.has(name));
    const halo = g.querySelector(".halo"), r = RADIUS[byName[name].role] || 6;
    const rps = f.rps || 0;
    halo.setAttribute("r", (r + (rps > 0 ? 2 + 2.5 * Math.log10(1 + rps) : 0)).toFixed(1));
    halo.setAttribute("stroke", rps > 0 ? rateClass(rps) : "none");
  }
  const layer = $("#fault-links");
  layer.replaceChildren();
  for (const [a, b] of fl.links) {
    if (!pos[a] || !pos[b]) continue;
    el("line", {x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1], class: "fault-link"}, layer);
  }
}

function drawTable() {
  const body = $("#node-table tbody");
  if (!body.children.length) {
    const names = topo.nodes.slice().sort((a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role) || a.name.localeCompare(b.name));
    for (const n of names) {
      const tr = document.createElement("tr");
      tr.dataset.node = n.name;
      tr.innerHTML = `<td>${n.name}</td>` + ["state", "rps", "p50_ms", "p99_ms", "hit", "errors", "shed", "records", "lag_s"]
        .map((k) => `<td data-field="${k}" data-node="${n.name}"></td>`).join("");
      tr.addEventListener("click", () => select(n.name));
      body.appendChild(tr);
    }
  }
  const fl = faultsOf(snapshot.control);
  for (const tr of body.children) {
    const name = tr.dataset.node, f = snapshot.nodes[name] || {};
    const down = f.up === false || fl.down.has(name);
    const cells = tr.querySelectorAll("td[data-field]");
    const values = [down ? "DOWN" : "up", fmt(f.rps), fmt(f.p50_ms, 2), fmt(f.p99_ms, 2),
      f.hit === null || f.hit === undefined ? "" : (100 * f.hit).toFixed(0) + "%", fmt(f.errors), fmt(f.shed),
      f.records ?? "", f.lag_s === null || f.lag_s === undefined ? "" : f.lag_s.toFixed(2)];
    cells.forEach((td, i) => { td.textContent = values[i]; });
    cells[0].classList.toggle("down", down);
    tr.classList.toggle("sel", name === selected);
  }
}

function drawSummary() {
  const ns = Object.values(snapshot.nodes);
  const up = ns.filter((f) => f.up).length;
  const rec = topo.nodes.filter((n) => n.role === "recursive").map((n) => snapshot.nodes[n.name] || {});
  const rps = rec.reduce((s, f) => s + (f.rps || 0), 0);
  const c = snapshot.control || {};
  const lat = c.latency ? (c.latency === "on" ? `latency ${c.scenario}` : "latency off") : "";
  $("#summary").textContent = `${up}/${ns.length} nodes up · ${rps.toFixed(0)} resolutions/s at the recursive nodes · ` +
    `${(c.faults || []).length} faults · ${lat}`;
  $("#summary").dataset.up = String(up);
}

function drawFaults() {
  const list = $("#faults");
  list.replaceChildren();
  for (const f of (snapshot.control && snapshot.control.faults) || []) {
    const li = document.createElement("li");
    const left = f.until ? ` (${Math.max(0, f.until - Date.now() / 1000).toFixed(0)} s left)` : "";
    const what = f.kind === "partition" ? `partition ${f.nodes.join(",")} from ${f.others.join(",") || "all others"}`
      : f.kind === "slow" ? `slow ${f.nodes[0]} ×${f.factor}` : f.kind === "link" ? `link ${f.nodes[0]}↔${f.nodes[1]} +${f.delayMs} ms loss ${f.loss}`
      : `kill ${f.nodes[0]}`;
    li.textContent = what + left + " ";
    li.dataset.fault = f.id;
    const b = document.createElement("button");
    b.textContent = "undo";
    b.addEventListener("click", () => control("/api/faults/remove", {id: f.id}));
    li.appendChild(b);
    list.appendChild(li);
  }
  if (snapshot.control && snapshot.control.error) $("#control-error").textContent = snapshot.control.error;
}

function onSnapshot(s) {
  snapshot = s;
  drawTraffic(); drawNodes(); drawTable(); drawSummary(); drawFaults();
  if (selected && snapshot.nodes[selected] && snapshot.t) {
    const h = history[selected] = history[selected] || [];
    const f = snapshot.nodes[selected];
    if (!h.length || h[h.length - 1].t < snapshot.t - 0.5) h.push({t: snapshot.t, ...f});
    if (h.length > 300) h.shift();
    drawDetail();
  }
}

// -- the node detail view -------------------------------------------------------------------------------------
async function select(name) {
  selected = name;
  document.querySelectorAll("#nodes .node").forEach((g) => g.classList.toggle("selected", g.dataset.node === name));
  $("#node-controls").hidden = false;
  try {
    const r = await fetch(`/api/history?node=${encodeURIComponent(name)}`);
    history[name] = (await r.json()).points || [];
  } catch (e) { history[name] = []; }
  drawDetail();
  if (snapshot) drawTable();
}

function sparkline(points, key, caption, scale = 1) {
  const vals = points.map((p) => (p[key] === null || p[key] === undefined) ? null : p[key] * scale);
  const nums = vals.filter((v) => v !== null);
  const max = Math.max(1e-9, ...nums);
  const w = 190, h = 48;
  const step = w / Math.max(1, vals.length - 1);
  let d = "";
  vals.forEach((v, i) => { if (v !== null) d += `${d ? "L" : "M"}${(i * step).toFixed(1)} ${(h - 4 - (h - 8) * v / max).toFixed(1)} `; });
  const last = nums.length ? nums[nums.length - 1] : null;
  return `<div class="chart"><svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none"><path class="line" d="${d}"/></svg>` +
    `<div class="cap">${caption}: ${last === null ? "–" : last.toFixed(2)} (max ${nums.length ? max.toFixed(2) : "–"})</div></div>`;
}

function drawDetail() {
  const n = byName[selected];
  if (!n) return;
  const f = (snapshot && snapshot.nodes[selected]) || {};
  $("#detail-title").textContent = `${n.name} · ${n.role}${n.prefix ? " " + n.prefix : ""} · ${n.location}` +
    (n.mirrorOf ? ` · mirror of ${n.mirrorOf}` : "");
  const ops = Object.entries(f.ops || {}).map(([k, v]) => `${esc(k)}: ${v.toFixed(1)}/s`).join(" · ");
  const lag = Object.entries(f.lag || {}).map(([k, v]) => `${esc(k)} ${v.toFixed(2)} s`).join(", ");
  $("#detail-figures").innerHTML = `<div>${f.up === false ? "<b>DOWN</b>" : "up"} · ${fmt(f.rps)} req/s · p50 ${fmt(f.p50_ms, 2)} ms · ` +
    `p99 ${fmt(f.p99_ms, 2)} ms · errors ${fmt(f.errors)}/s · shed ${fmt(f.shed)}/s · records ${f.records ?? "–"}` +
    (f.hit !== null && f.hit !== undefined ? ` · cache hits ${(100 * f.hit).toFixed(0)}%` : "") + "</div>" +
    `<div class="ops">${ops || "no requests in the last second"}</div>` + (lag ? `<div class="ops">replication lag: ${lag}</div>` : "") +
    `<div class="ops">REST ${esc(n.http)} · binary ${esc(n.tcp)}</div>`;
  const pts = history[selected] || [];
  let charts = sparkline(pts, "rps", "req/s") + sparkline(pts, "p99_ms", "p99 ms") + sparkline(pts, "errors", "errors/s") +
    sparkline(pts, "shed", "shed/s");
  if (n.role === "recursive") charts += sparkline(pts, "hit", "cache hit %", 100);
  if (pts.some((p) => p.lag_s !== null && p.lag_s !== undefined)) charts += sparkline(pts, "lag_s", "lag s");
  $("#charts").innerHTML = charts;
}

// -- resolutions ------------------------------------------------------------------------------------------------
async function resolve(ev) {
  ev.preventDefault();
  const handle = $("#resolve-input").value.trim();
  if (!handle) return;
  const q = new URLSearchParams({handle, via: $("#resolve-via").value, cache: $("#resolve-cache").checked ? "1" : "0"});
  $("#resolve-result").textContent = "resolving...";
  const r = await fetch(`/api/resolve?${q}`);
  const body = await r.json();
  if (!r.ok) { $("#resolve-result").textContent = body.error || `error ${r.status}`; return; }
  const a = body.answer || {};
  const values = (a.values || []).map((v) => `${v.index} ${v.type}: ${typeof v.data === "object" ? JSON.stringify(v.data.value) : v.data}`);
  $("#resolve-result").innerHTML = `<b>${esc(a.handle || handle)}</b>: code ${esc(a.responseCode)} (HTTP ${body.status}) via ` +
    `${esc(body.via)} in ${body.ms} ms` + (a.message ? ` — ${esc(a.message)}` : "") +
    `<div class="values">${values.map(esc).join("<br>")}</div>`;
  trace = {via: body.via, hops: a.trace || []};
  drawTrace();
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function drawTrace() {
  const list = $("#trace"), layer = $("#trace-layer");
  list.replaceChildren(); layer.replaceChildren();
  if (!trace) return;
  const from = pos[trace.via];
  trace.hops.forEach((h, i) => {
    const li = document.createElement("li");
    const failed = h.responseCode < 0;
    li.innerHTML = `${esc(h.node)} <span class="${failed || h.responseCode >= 400 ? "code-fail" : ""}">` +
      `${failed ? "timed out" : h.responseCode}</span> ${(h.elapsedUs / 1000).toFixed(2)} ms${h.cached ? " (cache)" : ""}`;
    li.dataset.hop = String(i + 1);
    list.appendChild(li);
    const to = pos[h.node];
    if (!from || !to || h.cached) return;
    const [ax, ay] = from, [bx, by] = to;
    const len = Math.hypot(bx - ax, by - ay) || 1, r = (RADIUS[byName[h.node].role] || 6) + 3;
    const ex = bx - (bx - ax) * r / len, ey = by - (by - ay) * r / len;
    el("line", {x1: ax, y1: ay, x2: ex, y2: ey, class: failed ? "hop failed" : "hop", "data-hop": String(i + 1)}, layer);
    el("text", {x: (ax + bx) / 2 + 4, y: (ay + by) / 2 - 4, class: "hop-label"}, layer, `${i + 1}: ${(h.elapsedUs / 1000).toFixed(1)} ms`);
  });
}

// -- controls ------------------------------------------------------------------------------------------------------
async function control(path, body) {
  $("#control-error").textContent = "";
  const headers = {"Content-Type": "application/json"};
  if (auth) headers.Authorization = auth;
  let r = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
  if (r.status === 401 && !auth) {
    const user = prompt("The controls need the cluster's admin credentials.\nUser (the registry admin, e.g. 300%3A0.NA%2F88):");
    const pass = user === null ? null : prompt("Password (its secret, in the cluster's credentials.json):");
    if (user !== null && pass !== null) {
      auth = "Basic " + btoa(`${user}:${pass}`);
      return control(path, body);
    }
  }
  const out = await r.json().catch(() => ({}));
  if (!r.ok) { $("#control-error").textContent = out.error || `error ${r.status}`; if (r.status === 401) auth = null; return; }
  if (snapshot) onSnapshot({...snapshot, control: out});
}
function duration() { const v = parseFloat($("#duration").value); return v > 0 ? v : null; }
function fault(kind, extra = {}) {
  if (!selected) { $("#control-error").textContent = "select a node first"; return; }
  control("/api/faults", {kind, nodes: [selected], duration: duration(), ...extra});
}

function wireControls() {
  $("#btn-kill").addEventListener("click", () => fault("kill"));
  $("#btn-restart").addEventListener("click", () => selected && control("/api/faults/remove", {kind: "kill", node: selected}));
  $("#btn-partition").addEventListener("click", () => fault("partition"));
  $("#btn-slow").addEventListener("click", () => fault("slow", {factor: parseFloat($("#slow-factor").value) || 10}));
  $("#btn-heal").addEventListener("click", () => control("/api/heal", {}));
  $("#btn-link").addEventListener("click", () => control("/api/faults", {kind: "link", nodes: [$("#link-a").value, $("#link-b").value],
    delayMs: parseFloat($("#link-delay").value) || 0, loss: parseFloat($("#link-loss").value) || 0, duration: duration()}));
  $("#btn-latency").addEventListener("click", () => {
    const v = $("#latency-select").value;
    control("/api/latency", v === "off" ? {latency: "off"} : {latency: "on", scenario: v});
  });
  $("#resolve-form").addEventListener("submit", resolve);
  const names = topo.nodes.map((n) => n.name);
  for (const id of ["#link-a", "#link-b"]) $(id).innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
  const rec = topo.nodes.filter((n) => n.role === "recursive");
  if (rec.length) $("#link-a").value = rec[0].name;
  $("#resolve-via").innerHTML = rec.map((n) => `<option>${esc(n.name)}</option>`).join("");
  $("#latency-select").innerHTML = topo.scenarios.map((s) => `<option>${esc(s)}</option>`).join("") + "<option>off</option>";
  $("#latency-select").value = topo.latency === "off" ? "off" : (topo.scenario || topo.defaultScenario);
}

function connect() {
  const src = new EventSource("/api/events");
  src.addEventListener("open", () => $("#conn").classList.add("live"));
  src.addEventListener("error", () => $("#conn").classList.remove("live"));
  src.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
}

async function main() {
  topo = await (await fetch("/api/topology")).json();
  $("#topo-name").textContent = `· ${topo.name} · ${topo.nodes.length} nodes`;
  drawMap();
  wireControls();
  connect();
}
main();

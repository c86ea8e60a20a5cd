// The status page of zvm serve: polls /v1/status and draws the gauges, a timeline of VMs,
// each job as a graph, and the recent runs. Plain DOM and SVG, no library: the page must work
// on a server with no network. Everything from the server is put in the page as text
// (textContent, attributes), never as markup.
"use strict";

const POLL_MS = 1500;
const TOKEN_KEY = "zvm-token";
const SVG_NS = "http://www.w3.org/2000/svg";
// Timeline windows to choose from, in seconds: the smallest that holds every VM shown.
const WINDOWS = [10, 30, 60, 120, 300, 600];

let last = null;          // the last status, redrawn on resize
let runsKey = "";         // what the runs table shows, so that it is rebuilt only on change
const open = new Set();   // runs whose report is expanded

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function stateClass(state) {
  return "s-" + String(state || "unknown").replace(/[^a-z_]/g, "");
}

function badge(state) {
  return el("span", { class: "badge " + stateClass(state) }, String(state || "unknown"));
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function count(n) {
  if (typeof n !== "number") return "–";
  if (n < 1e4) return String(n);
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [d, u] of units) if (n >= d) return (n / d).toFixed(n / d < 10 ? 1 : 0) + u;
  return String(n);
}

function micros(us) {
  if (typeof us !== "number") return "–";
  if (us < 1000) return us + " µs";
  if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}

function seconds(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + (s % 60) + "s";
  return s + "s";
}

function clock(ms) {
  const d = new Date(ms);
  const p = (n, w) => String(n).padStart(w || 2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
}

// ---- polling and the token ----

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = "conn " + (cls || "");
}

async function poll() {
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  $("signout").hidden = !t;
  let again = true;
  try {
    const r = await fetch("/v1/status?runs=50", { headers, cache: "no-store" });
    if (r.status === 401) {
      again = false; // until a token is given
      $("auth").hidden = false;
      $("main").hidden = true;
      $("auth-error").textContent = t ? "The server refused this token." : "";
      setConn("token needed", "down");
      return;
    }
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg += ": " + (await r.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    const status = await r.json();
    $("auth").hidden = true;
    $("main").hidden = false;
    last = status;
    render(status);
    setConn("live · " + clock(status.now_ms), "live");
  } catch (e) {
    setConn("no answer: " + e.message, "down");
  } finally {
    if (again) setTimeout(poll, POLL_MS);
  }
}

function signIn(event) {
  event.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  try { localStorage.setItem(TOKEN_KEY, t); } catch (_) { /* private mode: poll once */ }
  $("token").value = "";
  poll();
}

function signOut() {
  try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing kept */ }
  location.reload();
}

// ---- drawing ----

function render(s) {
  renderGauges(s);
  renderCluster(s);
  renderTimeline(s);
  renderJobs(s);
  renderRuns(s);
}

function card(label, value, extra) {
  const c = el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  if (extra) c.append(extra);
  return c;
}

function meter(used, max) {
  const fill = el("div");
  fill.style.width = (max > 0 ? Math.min(100, (100 * used) / max) : 0) + "%";
  return el("div", { class: "meter" }, fill);
}

function renderGauges(s) {
  const v = s.server || {};
  $("version").textContent = "v" + v.version + " · up " + seconds(v.uptime_secs || 0);
  const chips = el("div", { class: "chips" });
  for (const [state, n] of Object.entries((s.totals || {}).by_state || {})) {
    const b = badge(state);
    b.textContent = state + " " + count(n);
    chips.append(b);
  }
  $("gauges").replaceChildren(
    card("VMs running", v.vms_in_flight + " / " + v.max_vms, meter(v.vms_in_flight, v.max_vms)),
    card("queue", v.queue_depth + " / " + v.queue_capacity, meter(v.queue_depth, v.queue_capacity)),
    card("runs", count((s.totals || {}).runs || 0), chips),
    card("jobs shown", String((s.jobs || []).length)),
    card("programs cached", String(v.programs_cached)),
  );
}

// Cluster mode only: every node this one hears, alive or lost, with its VMs in use.
function renderCluster(s) {
  const c = s.cluster;
  $("cluster-section").hidden = !c;
  if (!c) return;
  const nodes = c.nodes || [];
  const alive = nodes.filter((n) => n.alive).length;
  $("cluster-summary").textContent =
    "this node: " + c.node + " · " + alive + " of " + nodes.length + " alive" +
    (c.connected ? "" : " · NOT connected to NATS");
  const rows = nodes.map((n) => {
    const vms = el("td", {}, n.running + " / " + n.max_vms, meter(n.running, n.max_vms));
    return el("tr", {},
      el("td", {}, n.id + (n.id === c.node ? " (this)" : "")),
      el("td", {}, badge(n.alive ? "ok" : "lost")),
      vms,
      el("td", { class: "num" }, n.id === c.node ? "—" : (n.last_heard_ms / 1000).toFixed(1) + " s"),
      el("td", {}, n.volume || "—"),
      el("td", { class: "c-kind" }, n.http),
    );
  });
  $("cluster").querySelector("tbody").replaceChildren(...rows);
}

function renderTimeline(s) {
  const box = $("timeline");
  const vms = s.vms || [];
  const now = s.now_ms;
  const oldest = vms.reduce((m, v) => Math.min(m, v.started_ms), now);
  const windowS = WINDOWS.find((w) => w * 1000 >= (now - oldest) * 1.05) || WINDOWS[WINDOWS.length - 1];
  const t0 = now - windowS * 1000;
  $("timeline-window").textContent = "last " + windowS + " s · " + vms.filter((v) => v.ended_ms == null).length + " in flight";
  const lanes = Math.max((s.server || {}).max_vms || 1, ...vms.map((v) => v.lane + 1));
  const width = Math.max(280, box.clientWidth - 16);
  const gutter = 54, laneH = 18, gap = 4, axis = 18;
  const plotW = width - gutter - 8;
  const height = lanes * (laneH + gap) + axis;
  const x = (ms) => gutter + ((Math.max(ms, t0) - t0) / (windowS * 1000)) * plotW;
  const g = svg("svg", { class: "timeline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "timeline of VMs" });
  for (let i = 0; i <= 5; i++) {
    const tx = gutter + (plotW * i) / 5;
    g.append(svg("line", { class: "tick-line", x1: tx, x2: tx, y1: 0, y2: lanes * (laneH + gap) }));
    const ago = windowS - (windowS * i) / 5;
    g.append(svg("text", { class: "tick", x: tx, y: height - 4, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" }, ago === 0 ? "now" : "−" + ago + " s"));
  }
  for (let lane = 0; lane < lanes; lane++) {
    const y = lane * (laneH + gap);
    g.append(svg("rect", { class: "lane-bg", x: gutter, y, width: plotW, height: laneH, rx: 3 }));
    g.append(svg("text", { class: "lane-label", x: 0, y: y + laneH - 5 }, "slot " + lane));
  }
  for (const v of vms) {
    const end = v.ended_ms == null ? now : v.ended_ms;
    if (end < t0) continue;
    const x1 = x(v.started_ms);
    const w = Math.max(3, x(end) - x1);
    const y = v.lane * (laneH + gap);
    const took = end - v.started_ms;
    const bar = svg("rect", { class: "bar " + stateClass(v.state), "data-state": v.state, "data-id": v.id, x: x1, y: y + 2, width: w, height: laneH - 4, rx: 2 });
    bar.append(svg("title", {}, `${v.label} (${v.kind}${v.tenant ? ", " + v.tenant : ""}): ${v.state}, ${took} ms`));
    g.append(bar);
  }
  box.replaceChildren(g);
}

// Layered layout of a DAG: a member's layer is the longest path to it from a source, so every
// pipe points to the right. A pipe that spans several layers passes through a slot of its own
// in each layer between (a dummy node), so that it runs beside the members there rather than
// through them. Within a layer, nodes are ordered by the mean row of their predecessors,
// which keeps most pipes from crossing.
function layout(names, pipes) {
  const preds = new Map(names.map((n) => [n, []]));
  for (const p of pipes) preds.get(p.to).push(p.from);
  const layer = new Map();
  const visiting = new Set();
  const depth = (n) => {
    if (layer.has(n)) return layer.get(n);
    if (visiting.has(n)) return 0; // a cycle would be a bad job; draw it anyway
    visiting.add(n);
    const d = preds.get(n).reduce((m, p) => Math.max(m, depth(p) + 1), 0);
    visiting.delete(n);
    layer.set(n, d);
    return d;
  };
  names.forEach(depth);
  const routes = pipes.map((p, i) => {
    const via = [];
    let prev = p.from;
    for (let l = layer.get(p.from) + 1; l < layer.get(p.to); l++) {
      const d = "\u0000" + i + ":" + l; // no member name holds a NUL
      layer.set(d, l);
      preds.set(d, [prev]);
      via.push(d);
      prev = d;
    }
    if (via.length) {
      const ps = preds.get(p.to);
      ps[ps.indexOf(p.from)] = prev;
    }
    return via;
  });
  const layers = [];
  for (const n of names.concat(routes.flat())) (layers[layer.get(n)] ||= []).push(n);
  const row = new Map();
  for (const col of layers) {
    if (!col) continue;
    const key = (n) => {
      const ps = preds.get(n).filter((p) => row.has(p));
      return ps.length ? ps.reduce((a, p) => a + row.get(p), 0) / ps.length : Infinity;
    };
    col.sort((a, b) => key(a) - key(b) || (a < b ? -1 : 1));
    col.forEach((n, i) => row.set(n, i));
  }
  return { layer, row, routes, layers: layers.length, rows: Math.max(1, ...layers.map((c) => (c || []).length)) };
}

function jobGraph(job, index) {
  const members = job.members || [];
  const pipes = (job.pipes || []).filter((p) => p.from && p.to);
  const byName = new Map(members.map((m) => [m.name, m]));
  const names = members.map((m) => m.name);
  for (const p of pipes) for (const n of [p.from, p.to]) if (!byName.has(n)) { byName.set(n, null); names.push(n); }
  const L = layout(names, pipes);
  const nodeW = 136, nodeH = 42, colGap = 100, rowGap = 26, pad = 10;
  const width = pad * 2 + L.layers * nodeW + (L.layers - 1) * colGap;
  const height = pad * 2 + L.rows * nodeH + (L.rows - 1) * rowGap;
  const pos = (n) => ({ x: pad + L.layer.get(n) * (nodeW + colGap), y: pad + L.row.get(n) * (nodeH + rowGap) });
  const g = svg("svg", { class: "job-graph", "data-job": job.id, width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "graph of job " + job.id });
  const arrow = "arrow-" + index;
  g.append(svg("defs", {}, svg("marker", { id: arrow, class: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 10, markerHeight: 10, orient: "auto-start-reverse" }, svg("path", { d: "M0 0 L10 5 L0 10 z" }))));
  const maxBytes = pipes.reduce((m, p) => Math.max(m, p.bytes || 0), 1);
  pipes.forEach((p, i) => {
    const a = pos(p.from), b = pos(p.to);
    // From the writer's right side, straight through each slot on the way, to the reader's
    // left side; curves in the gaps between layers, lines through the slots.
    const pts = [[a.x + nodeW, a.y + nodeH / 2]];
    for (const d of L.routes[i]) {
      const { x, y } = pos(d);
      pts.push([x, y + nodeH / 2], [x + nodeW, y + nodeH / 2]);
    }
    pts.push([b.x - 1, b.y + nodeH / 2]);
    let d = `M${pts[0][0]} ${pts[0][1]}`;
    for (let k = 1; k < pts.length; k++) {
      const [x0, y0] = pts[k - 1], [x1, y1] = pts[k];
      const mx = (x0 + x1) / 2;
      d += k % 2 ? ` C${mx} ${y0} ${mx} ${y1} ${x1} ${y1}` : ` L${x1} ${y1}`;
    }
    const e = svg("g", { class: "edge", "data-from": p.from, "data-to": p.to, "data-bytes": p.bytes });
    e.append(svg("path", { d, "marker-end": `url(#${arrow})`, "stroke-width": (1.2 + (3 * Math.log1p(p.bytes || 0)) / Math.log1p(maxBytes)).toFixed(2) }));
    // The label sits in the first gap, where the pipes out of one member fan out.
    const label = bytes(p.bytes);
    const lw = 7 * label.length + 6;
    const lx = (pts[0][0] + pts[1][0]) / 2, ly = (pts[0][1] + pts[1][1]) / 2;
    e.append(svg("rect", { class: "bytes-bg", x: lx - lw / 2, y: ly - 8, width: lw, height: 15, rx: 3 }));
    e.append(svg("text", { class: "bytes", x: lx, y: ly + 3, "text-anchor": "middle" }, label));
    e.append(svg("title", {}, `${p.from} → ${p.to}: ${p.bytes} bytes`));
    g.append(e);
  });
  for (const n of names) {
    const m = byName.get(n);
    const { x, y } = pos(n);
    const state = m ? m.state : "external";
    const node = svg("g", { class: "node " + (m ? stateClass(state) : "external"), "data-member": n, "data-state": state, transform: `translate(${x},${y})` });
    node.append(svg("rect", { width: nodeW, height: nodeH, rx: 6 }));
    node.append(svg("circle", { class: "dot", cx: 11, cy: 13, r: 4 }));
    const short = n.length > 15 ? n.slice(0, 14) + "…" : n;
    node.append(svg("text", { class: "name", x: 20, y: 17 }, short));
    let sub = state;
    if (m && m.fuel) sub += " · " + count(m.fuel) + " fuel";
    if (m && m.started_ms && m.ended_ms) sub += " · " + (m.ended_ms - m.started_ms) + " ms";
    node.append(svg("text", { class: "sub", x: 10, y: 33 }, sub));
    node.append(svg("title", {}, `${n}: ${state}${m ? ", fuel " + m.fuel : ""}`));
    g.append(node);
  }
  return g;
}

function renderJobs(s) {
  const jobs = s.jobs || [];
  $("jobs-count").textContent = jobs.length ? jobs.length + " recent" : "";
  if (!jobs.length) {
    $("jobs").replaceChildren(el("div", { class: "panel empty" }, "No jobs yet."));
    return;
  }
  $("jobs").replaceChildren(...jobs.map((j, i) => {
    const moved = (j.pipes || []).reduce((a, p) => a + (p.bytes || 0), 0);
    const took = (j.ended_ms || s.now_ms) - j.started_ms;
    const head = el("div", { class: "job-head" }, badge(j.state), el("code", {}, j.id),
      el("span", { class: "muted" }, `${(j.members || []).length} members · ${(j.pipes || []).length} pipes · ${bytes(moved)} moved · ${took} ms${j.tenant ? " · " + j.tenant : ""}`));
    return el("div", { class: "panel job", "data-job": j.id }, head, jobGraph(j, i));
  }));
}

function renderRuns(s) {
  const runs = s.runs || [];
  const key = runs.map((r) => r.id).join(",") + "|" + [...open].join(",");
  if (key === runsKey) return;
  runsKey = key;
  const body = $("runs").tBodies[0];
  if (!runs.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No runs yet.")));
    return;
  }
  const rows = [];
  for (const r of runs) {
    const m = r.summary || {};
    const etags = el("td", { class: "c-etags" });
    for (const c of m.channels || []) {
      const moved = (c.read_bytes || 0) + (c.write_bytes || 0);
      if (!moved && c.name !== "stdout") continue;
      const span = el("span", { class: "etag", title: `${c.name}: ${c.etag} (read ${c.read_bytes} B, wrote ${c.write_bytes} B)` }, `${c.name} ${String(c.etag || "").slice(0, 8)}`);
      etags.append(span);
    }
    const program = el("td", { class: "program", title: r.label }, r.label);
    if (r.job) program.append(el("span", { class: "muted" }, " · job " + r.job));
    const tr = el("tr", { class: "run" + (open.has(r.id) ? " open" : ""), "data-id": r.id, "data-state": m.state, tabindex: 0 },
      el("td", {}, clock(r.ended_ms)),
      el("td", { class: "c-kind" }, r.kind + (r.tenant ? " · " + r.tenant : "")),
      program,
      el("td", { title: m.state_text || "" }, badge(m.state)),
      el("td", { class: "num" }, m.exit_code == null ? "–" : String(m.exit_code)),
      el("td", { class: "num", title: `${m.fuel_used} of ${m.fuel_limit}` }, count(m.fuel_used)),
      el("td", { class: "num" }, micros(m.wall_time_us)),
      el("td", { class: "num c-mem" }, bytes(m.peak_memory)),
      etags);
    const toggle = () => {
      if (open.has(r.id)) open.delete(r.id); else open.add(r.id);
      if (last) renderRuns(last);
    };
    tr.addEventListener("click", toggle);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
    rows.push(tr);
    if (open.has(r.id)) {
      rows.push(el("tr", { class: "detail", "data-id": r.id }, el("td", { colspan: 9 }, el("pre", {}, JSON.stringify(r.report, null, 2)))));
    }
  }
  body.replaceChildren(...rows);
}

window.addEventListener("resize", () => { if (last) { renderTimeline(last); } });
document.addEventListener("DOMContentLoaded", () => {
  $("auth").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  poll();
});

// The supervisor panel: polls the JSON API and redraws. No framework, no build step.
"use strict";

const POLL_MS = 1500;
const LAGGING = 1.5;  // a device this many times its kind's p95 is worth a look
const STATE_ORDER = ["received", "held", "allocated", "picking", "conveyed", "packed", "labelled",
                     "sorted", "shipped", "exception", "cancelled"];
// Stages in the order a tote meets them; a stage the engine adds later is listed after these.
const STAGE_FLOW = ["allocation", "picking", "conveying", "packing", "labelling", "sorting"];
const $ = (id) => document.getElementById(id);

function flowRank(stage) {
  const rank = STAGE_FLOW.indexOf(stage);
  return rank < 0 ? STAGE_FLOW.length : rank;
}

// Build DOM nodes from data: text always goes in as text, never as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function ms(value) { return value === null || value === undefined ? "–" : seconds(value / 1000); }

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok && response.status !== 503) {
    const detail = body && body.detail;
    throw new Error(typeof detail === "string" ? detail : `${response.status} ${response.statusText}`);
  }
  return body;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

// ---- live sections ---------------------------------------------------------------------------
// The engine decides what its health reports: every yes/no (nested ones too) becomes a pill.
function drawHealth(health) {
  const pill = (name, up) => el("span", { class: `pill ${up ? "ok" : "bad"}` }, name);
  const faults = Object.entries(health.faults || {});
  const headline = !health.ok ? "floor NOT OK" : faults.length ? `${faults.length} device(s) faulted` : "floor OK";
  const pills = [pill(headline, health.ok && !faults.length)];
  for (const [device, fault] of faults) pills.push(pill(`${device}: ${fault}`, false));
  for (const [key, value] of Object.entries(health)) {
    if (key === "ok" || key === "faults") continue;
    if (typeof value === "boolean") pills.push(pill(key, value));
    else if (typeof value === "number") pills.push(el("span", { class: "pill" }, `${key.replace(/_/g, " ")} ${value}`));
    else if (value && typeof value === "object") {
      for (const [name, up] of Object.entries(value)) if (typeof up === "boolean") pills.push(pill(name, up));
    }
  }
  $("health").replaceChildren(...pills);
}

function drawStats(stats) {
  $("site").textContent = stats.site;
  const counts = stats.orders_by_state;
  $("states").replaceChildren(...STATE_ORDER.map((state) => el("div", {
    class: `state ${state === "exception" && counts[state] ? "alert" : ""} ${state === "held" && counts[state] ? "hold" : ""}`,
  }, el("b", {}, counts[state] ?? 0), el("span", {}, state))));

  const throughput = stats.throughput;
  $("last-minute").textContent = throughput.last_minute;
  const peak = Math.max(1, ...throughput.per_minute.map((m) => m.shipped));
  $("per-minute").replaceChildren(...throughput.per_minute.map((m) => el("div", {
    style: { height: `${(100 * m.shipped) / peak}%` },
    title: `${new Date(m.start * 1000).toLocaleTimeString()}: ${m.shipped} shipped`,
  })));
  $("cycle-p50").textContent = seconds(stats.orders.cycle.p50_s);
  $("cycle-p95").textContent = seconds(stats.orders.cycle.p95_s);
  $("outcomes").textContent = Object.entries(stats.orders.in_window).map(([k, v]) => `${v} ${k}`).join(", ");

  const slowestStage = stats.slowest_stage && stats.slowest_stage.stage;
  const stages = Object.entries(stats.stages).sort((a, b) => flowRank(a[0]) - flowRank(b[0]));
  fill($("stages").tBodies[0], stages.map(([stage, d]) => el("tr",
    { class: stage === slowestStage ? "slowest" : "" },
    el("td", {}, stage), el("td", { class: "num" }, d.count), el("td", { class: "num" }, seconds(d.p50_s)),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.p99_s)),
    el("td", { class: "num" }, seconds(d.recent_p95_s)))));

  fill($("kinds").tBodies[0], Object.entries(stats.kinds).map(([kind, d]) => el("tr", {},
    el("td", {}, kind), el("td", { class: "num" }, d.count), el("td", { class: "num" }, seconds(d.p50_s)),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.p99_s)),
    el("td", {}, d.slowest ?? "–"))));

  const slowest = stats.slowest_device;
  $("slowest-device").textContent = slowest ? `${slowest.device_id} (${slowest.kind}) ${seconds(slowest.recent_p95_s)}` : "–";
  // A conveyor is always slower than a printer; what a supervisor needs is the printer that is slow
  // for a printer. Compare like with like: the device's last-minute p95 over its kind's p95, and list
  // only the devices that lag their peers.
  const lag = (d) => d.recent_p95_s / (stats.kinds[d.kind].p95_s || Infinity);
  const ranked = Object.entries(stats.devices).filter(([, d]) => d.recent_p95_s !== null && stats.kinds[d.kind])
    .filter(([, d]) => lag(d) >= LAGGING).sort((a, b) => lag(b[1]) - lag(a[1])).slice(0, 10);
  fill($("slow-devices").tBodies[0], ranked.map(([id, d]) => el("tr",
    { class: lag(d) >= LAGGING ? "lagging" : "" },
    el("td", {}, id), el("td", {}, d.kind), el("td", { class: "num" }, d.count),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.recent_p95_s)),
    el("td", { class: "num" }, `${lag(d).toFixed(1)}×`))));
}

function drawDevices(devices) {
  const problem = (d) => !d.online || d.fault || !d.in_rotation;
  const sorted = [...devices].sort((a, b) => (problem(b) - problem(a)) || a.device_id.localeCompare(b.device_id));
  const offline = devices.filter((d) => !d.online).length;
  const faulted = devices.filter((d) => d.fault).length;
  $("device-summary").textContent = `${devices.length} devices · ${offline} offline · ${faulted} faulted`;
  fill($("devices").tBodies[0], sorted.map((d) => el("tr", { class: problem(d) ? "problem" : "" },
    el("td", {}, d.device_id), el("td", {}, d.kind), el("td", {}, d.protocol),
    el("td", {}, el("span", { class: `dot ${d.online ? "on" : ""}`, title: d.online ? "online" : "offline" })),
    el("td", {}, d.state), el("td", {}, d.fault ?? ""), el("td", { class: "num" }, d.queue_length),
    el("td", { class: "num" }, d.in_flight), el("td", {}, d.in_rotation ? "yes" : "no"))));
}

function drawStuck(page) {
  $("stuck-count").textContent = page.total ? `${page.total}` : "";
  $("stuck-none").hidden = page.total > 0;
  fill($("stuck").tBodies[0], page.items.map((o) => el("tr", {},
    el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showOrder(String(o.id)); } }, o.id)),
    el("td", {}, o.external_id), el("td", {}, o.state), el("td", {}, o.carrier),
    el("td", { class: "reason" }, o.reason ?? ""),
    el("td", {},
      o.state === "exception" ? el("button", { class: "primary", onclick: (e) => act(e, o.id, "resolve") }, "Resolve") : null,
      " ", el("button", { class: "danger", onclick: (e) => act(e, o.id, "cancel") }, "Cancel")))));
}

async function act(event, orderId, action) {
  if (action === "cancel" && !confirm(`Cancel order ${orderId}?`)) return;
  event.target.disabled = true;
  try {
    await api(`/api/orders/${orderId}/${action}`, { method: "POST" });
  } catch (err) {
    alert(`${action} order ${orderId}: ${err.message}`);
  }
  await poll(false);
}

let timer = null;
async function poll(schedule = true) {
  try {
    const [stats, devices, health, stuck] = await Promise.all([
      api("/api/stats"), api("/api/devices"), api("/healthz"),
      api("/api/orders?state=exception&state=held&limit=200"),
    ]);
    drawHealth(health);
    drawStats(stats);
    drawDevices(devices);
    drawStuck(stuck);
    $("updated").textContent = new Date().toLocaleTimeString();
    $("banner").hidden = true;
  } catch (err) {
    $("banner").textContent = `Cannot reach the controller: ${err.message}. Retrying…`;
    $("banner").hidden = false;
  }
  if (schedule) timer = setTimeout(poll, POLL_MS);
}

// ---- order search and timeline -------------------------------------------------------------------
async function findOrder(key) {
  if (/^\d+$/.test(key)) {
    try { return await api(`/api/orders/${key}`); } catch (err) { /* maybe a numeric external id */ }
  }
  const page = await api(`/api/orders?external_id=${encodeURIComponent(key)}`);
  if (!page.items.length) throw new Error(`no order with id or external id "${key}"`);
  return api(`/api/orders/${page.items[0].id}`);
}

async function showOrder(key) {
  $("search-key").value = key;
  const box = $("order");
  try {
    const order = await findOrder(key.trim());
    const timeline = await api(`/api/orders/${order.id}/timeline`);
    box.replaceChildren(drawOrder(order), drawTimeline(timeline.items));
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

function drawOrder(o) {
  const fact = (name, value) => (value === null || value === undefined || value === "" ? null
    : el("div", {}, el("span", {}, `${name} `), value));
  const stages = Object.entries(o.stages).filter(([, at]) => at)
    .map(([stage, at]) => `${stage} ${new Date(at).toLocaleTimeString()}`).join(" → ");
  return el("div", {},
    el("div", { class: "facts" },
      fact("order", `${o.id} (${o.external_id})`), fact("state", el("b", {}, o.state)), fact("reason", o.reason),
      fact("carrier", o.carrier), fact("tote", o.tote), fact("pack station", o.pack_station),
      fact("printer", o.printer), fact("lane", o.lane),
      fact("lines", o.lines.map((l) => `${l.qty}× ${l.sku}`).join(", "))),
    el("div", { class: "muted small" }, stages));
}

function drawTimeline(items) {
  if (!items.length) return el("p", { class: "muted" }, "No device commands yet.");
  const t = (iso) => (iso ? Date.parse(iso) : null);
  const start = Math.min(...items.map((c) => t(c.queued_at)));
  const ends = items.flatMap((c) => [c.completed_at, c.acked_at, c.sent_at, c.queued_at].map(t).filter((v) => v !== null));
  const span = Math.max(1, Math.max(...ends) - start);
  const pct = (v) => `${(100 * (v - start)) / span}%`;
  const width = (a, b) => `${(100 * (b - a)) / span}%`;

  const rows = items.flatMap((c) => {
    const queued = t(c.queued_at), sent = t(c.sent_at), acked = t(c.acked_at), done = t(c.completed_at);
    const segs = [];
    const seg = (cls, a, b, title) => segs.push(el("div", { class: `seg ${cls}`, style: { left: pct(a), width: width(a, b) }, title }));
    if (sent !== null) seg("wait", queued, sent, `queued → sent ${ms(c.wait_ms)}`);
    if (acked !== null) seg("ack", sent ?? queued, acked, `sent → acked ${ms(c.ack_ms)}`);
    if (done !== null) seg(c.outcome === "ok" ? "exec" : "failed", acked ?? sent ?? queued, done, `acked → done ${ms(c.exec_ms)} (${c.outcome})`);
    const last = done ?? acked ?? sent ?? queued;
    if (done === null) seg("open", last, start + span, `${c.outcome}${c.reason ? `: ${c.reason}` : ""}`);
    const label = `${c.task} · ${c.device_id}${c.retries ? ` · ${c.retries} retries` : ""}`;
    return [el("div", { class: "label", title: c.command_id }, label, " ",
               el("span", { class: c.outcome === "ok" ? "muted" : "error" }, `${ms(c.total_ms)} ${c.outcome === "ok" ? "" : c.outcome}`)),
            el("div", { class: "track" }, segs)];
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => el("span", {}, seconds((f * span) / 1000)));
  return el("div", {},
    el("h3", {}, "Device timeline"),
    el("div", { class: "timeline" }, rows, el("div", {}), el("div", { class: "axis" }, ticks)),
    el("div", { class: "legend" },
      el("span", {}, el("i", { class: "seg wait", style: { position: "static" } }), "queued → sent"),
      el("span", {}, el("i", { style: { background: "var(--ack)" } }), "sent → acked"),
      el("span", {}, el("i", { style: { background: "var(--exec)" } }), "acked → done"),
      el("span", {}, el("i", { style: { background: "var(--fail)" } }), "failed"),
      el("span", {}, el("i", { class: "seg open", style: { position: "static" } }), "not finished")));
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); showOrder($("search-key").value); });
const wanted = new URLSearchParams(location.search).get("order");
if (wanted) showOrder(wanted);
poll();

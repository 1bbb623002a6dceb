// One order: its facts, what it waits on, its device timeline and where its time went, re-read while
// it is open. Commands still in flight are drawn as they stand (queued, sent, acked) with a bar that
// runs to now; a command the device refused is red.
import { $, ApiError, api, clock, el, ms, post, seconds, since, toast } from "./dom.js";

const REFRESH_MS = 900;  // about once a second, on its own timer: the floor feed may be polling slower
const IN_FLIGHT = new Set(["queued", "sent", "acked"]);
const view = { id: null, loading: false, loadedAt: 0, error: null };

export function openOrder(id) {
  view.id = String(id);
  $("search-key").value = view.id;
  history.replaceState(null, "", `?order=${encodeURIComponent(view.id)}`);
  $("order-card").hidden = false;
  load(true);
  $("order-card").scrollIntoView({ behavior: "smooth", block: "start" });
}

function closeOrder() {
  view.id = null;
  $("order").replaceChildren();
  $("order-card").hidden = true;
  history.replaceState(null, "", location.pathname);
}

// Called on every floor snapshot, and each second by the view's own timer.
export function refreshOrder() {
  if (view.id !== null && !view.loading && Date.now() - view.loadedAt >= REFRESH_MS) load(false);
}

async function findOrder(key) {
  if (/^\d+$/.test(key)) {
    try { return await api(`/api/orders/${key}`); } catch (err) { if (!(err instanceof ApiError) || err.status !== 404) throw err; }
  }
  const page = await api(`/api/orders?external_id=${encodeURIComponent(key)}`);
  if (!page.items.length) throw new Error(`no order with id or external id "${key}"`);
  return api(`/api/orders/${page.items[0].id}`);
}

async function load(first) {
  const key = view.id;
  view.loading = true;
  view.loadedAt = Date.now();
  try {
    const order = await findOrder(key.trim());
    const [timeline, split, audit] = await Promise.all([
      api(`/api/orders/${order.id}/timeline`),
      api(`/api/orders/${order.id}/breakdown`).catch(() => null),
      api(`/api/orders/${order.id}/audit?limit=20`).catch(() => null)]);
    if (key !== view.id) return;
    if (first && String(order.id) !== key) view.id = String(order.id);  // found by external id
    $("order").replaceChildren(drawOrder(order), drawTimeline(timeline.items), drawBreakdown(split), drawAudit(audit));
    $("order-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (key === view.id && (first || $("order").childElementCount === 0)) {
      $("order").replaceChildren(el("p", { class: "error" }, err.message));
    }
    $("order-updated").textContent = `not updated: ${err.message}`;
  } finally {
    view.loading = false;
  }
}

async function act(orderId, action) {
  if (!confirm(`${action === "resolve" ? "Resolve" : "Cancel"} order ${orderId}?`)) return;
  try {
    const change = await post(`/api/orders/${orderId}/${action}`);
    toast(`Order ${orderId}: ${change.state}`);
  } catch (err) {
    toast(`${action} order ${orderId}: ${err.message}`, true);
  }
  load(false);
}

function drawOrder(o) {
  const fact = (name, value) => (value === null || value === undefined || value === "" ? null
    : el("div", {}, el("span", {}, `${name} `), value));
  const stages = Object.entries(o.stages).filter(([, at]) => at)
    .map(([stage, at]) => `${stage} ${clock(at)}`).join(" → ");
  const w = o.waiting_on;
  const waiting = w ? el("div", { class: "waiting" }, "Waiting on ", el("b", {}, w.device ?? w.device_id),
                         w.reason ? ` (${w.reason})` : "", ` for ${since(w.since)}`) : null;
  const open = !["shipped", "cancelled"].includes(o.state);
  return el("div", {},
    el("div", { class: "facts" },
      fact("order", `${o.id} (${o.external_id})`), fact("state", el("b", { class: o.state === "exception" ? "error" : "" }, o.state)),
      fact("reason", o.reason), fact("age", since(o.received_at)), fact("due", o.due_at ? clock(o.due_at) : null),
      fact("carrier", o.carrier), fact("tote", o.tote), fact("pack station", o.pack_station),
      fact("printer", o.printer), fact("lane", o.lane),
      fact("lines", o.lines.map((l) => `${l.qty}× ${l.sku}`).join(", "))),
    waiting,
    el("div", { class: "muted small" }, stages),
    open ? el("div", { class: "actions" },
      o.state === "exception" ? el("button", { class: "primary", type: "button", onclick: () => act(o.id, "resolve") }, "Resolve") : null,
      el("button", { class: "danger", type: "button", onclick: () => act(o.id, "cancel") }, "Cancel order")) : null);
}

// Who did what to the order: released it, cancelled or resolved it, or tried to and was refused.
function drawAudit(page) {
  if (!page) return null;
  const rows = page.items.map((a) => el("tr", { "data-action": a.action },
    el("td", {}, clock(a.at)), el("td", {}, a.actor), el("td", { class: "muted" }, a.role ?? ""),
    el("td", {}, a.action.replace(/^order\./, "")),
    el("td", { class: a.outcome.startsWith("ok") ? "" : "error" }, a.outcome)));
  return el("div", { class: "order-audit" },
    el("h3", {}, "Who did what ", page.total > page.items.length ? el("span", { class: "muted small" }, `latest ${page.items.length} of ${page.total}`) : null),
    rows.length ? el("div", { class: "table-x" }, el("table", {},
      el("thead", {}, el("tr", {}, ["when", "who", "role", "action", "outcome"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))) : el("p", { class: "muted" }, "Nobody has acted on this order."));
}

// A command the device turned down (now or for good), as opposed to one that failed while running.
function refused(c) {
  return /refused|rejected/i.test(c.reason ?? "") || c.outcome === "rejected" || c.outcome === "refused";
}

function drawTimeline(items) {
  if (!items.length) return el("p", { class: "muted" }, "No device commands yet.");
  const now = Date.now();
  const t = (iso) => (iso ? Date.parse(iso) : null);
  const start = Math.min(...items.map((c) => t(c.queued_at)));
  const running = items.some((c) => c.completed_at === null);
  const ends = items.flatMap((c) => [c.completed_at, c.acked_at, c.sent_at, c.queued_at].map(t).filter((v) => v !== null));
  const span = Math.max(1, Math.max(...ends, running ? now : 0) - start);
  const pct = (v) => `${(100 * (v - start)) / span}%`;
  const width = (a, b) => `${(100 * Math.max(0, b - a)) / span}%`;

  const rows = items.flatMap((c) => {
    const queued = t(c.queued_at), sent = t(c.sent_at), acked = t(c.acked_at), done = t(c.completed_at);
    const inFlight = done === null && IN_FLIGHT.has(c.outcome);
    const bad = refused(c) || (done !== null && c.outcome !== "ok");
    const segs = [];
    const seg = (cls, a, b, title) => segs.push(el("div", { class: `seg ${cls}`, style: { left: pct(a), width: width(a, b) }, title }));
    if (sent !== null) seg("wait", queued, sent, `queued → sent ${ms(c.wait_ms)}`);
    if (acked !== null) seg("ack", sent ?? queued, acked, `sent → acked ${ms(c.ack_ms)}`);
    if (done !== null) seg(c.outcome === "ok" ? "exec" : "failed", acked ?? sent ?? queued, done, `acked → done ${ms(c.exec_ms)} (${c.outcome})`);
    const last = acked ?? sent ?? queued;
    if (inFlight) seg(`running ${bad ? "refused" : c.outcome}`, last, now, `${c.outcome} for ${seconds((now - last) / 1000)}${c.reason ? `: ${c.reason}` : ""}`);
    else if (done === null) seg("open", last, start + span, `${c.outcome}${c.reason ? `: ${c.reason}` : ""}`);
    const label = `${c.task} · ${c.device_id}${c.retries ? ` · ${c.retries} retries` : ""}`;
    const status = inFlight ? el("span", { class: `badge ${bad ? "bad" : c.outcome}` }, `${c.outcome} ${seconds((now - queued) / 1000)}`)
      : el("span", { class: bad ? "error" : "muted" }, `${ms(c.total_ms)} ${c.outcome === "ok" ? "" : c.outcome}`);
    return [el("div", { class: `label ${bad ? "error" : ""}`, title: `${c.command_id}${c.reason ? `\n${c.reason}` : ""}`,
                        "data-command": c.command_id, "data-outcome": c.outcome },
               label, " ", status, bad && c.reason ? el("div", { class: "why" }, c.reason) : null),
            el("div", { class: "track" }, segs)];
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => el("span", {}, seconds((f * span) / 1000)));
  const open = items.filter((c) => c.completed_at === null).length;
  return el("div", {},
    el("h3", {}, "Device timeline ", open ? el("span", { class: "muted small" }, `${open} command(s) in flight`) : null),
    el("div", { class: "timeline" }, rows, el("div", {}), el("div", { class: "axis" }, ticks)),
    el("div", { class: "legend" },
      el("span", {}, el("i", { style: { background: "var(--wait)" } }), "queued → sent"),
      el("span", {}, el("i", { style: { background: "var(--ack)" } }), "sent → acked"),
      el("span", {}, el("i", { style: { background: "var(--exec)" } }), "acked → done"),
      el("span", {}, el("i", { class: "seg running", style: { position: "static" } }), "in flight, running"),
      el("span", {}, el("i", { style: { background: "var(--fail)" } }), "failed or refused")));
}

// The parts of GET /api/orders/{id}/breakdown, in the order the API lists them (docs/insight.md).
const PARTS = {
  held: "waiting for stock",
  queued: "queued for a device",
  device_down: "device down",
  transmission: "transmission / ack",
  execution: "device working",
  transit: "belt & sorter travel",
  exception: "in exception",
  controller: "controller",
};

function pct(share) {
  const p = share * 100;
  return p >= 10 || p === 0 ? `${Math.round(p)}%` : p >= 1 ? `${p.toFixed(1)}%` : "<1%";
}

// Where the order's time went: one stacked bar of its cycle time, part by part, and a legend with the
// seconds of each part (the devices behind it in the tooltip).
function drawBreakdown(b) {
  if (!b) return null;
  const parts = b.parts.filter((p) => p.seconds > 0);
  const devices = (p) => (p.devices.length ? ` — ${p.devices.slice(0, 3).map((d) => `${d.device_id} ${seconds(d.seconds)}`).join(", ")}` : "");
  const title = (p) => `${PARTS[p.part] ?? p.part}: ${seconds(p.seconds)} (${pct(p.share)})${devices(p)}`;
  const total = parts.reduce((sum, p) => sum + p.seconds, 0);
  const bar = el("div", { class: "bd-bar", role: "img", "aria-label": parts.map(title).join("; ") },
    parts.map((p) => el("div", { class: `bd-seg bd-${p.part}`, "data-part": p.part, title: title(p),
                                 style: { width: `${(100 * p.seconds) / total}%` } })));
  const legend = el("div", { class: "legend bd-legend" }, parts.map((p) => el("span", { "data-part": p.part, title: title(p) },
    el("i", { class: `bd-${p.part}` }), `${PARTS[p.part] ?? p.part} `, el("b", {}, seconds(p.seconds)),
    ` ${pct(p.share)}`, p.devices.length ? el("span", { class: "bd-device" }, ` · ${p.devices[0].device_id}`) : null)));
  return el("div", { class: "breakdown" },
    el("h3", {}, "Where the time went ",
      el("span", { class: "muted small" }, `${seconds(b.cycle_s)} ${b.finished ? `received → ${b.state}` : "so far, still running"}`)),
    parts.length ? bar : el("p", { class: "muted" }, "No time yet."), legend);
}

export function setupOrder() {
  $("search").addEventListener("submit", (e) => { e.preventDefault(); openOrder($("search-key").value.trim()); });
  $("order-close").addEventListener("click", closeOrder);
  setInterval(refreshOrder, 1000);
  const wanted = new URLSearchParams(location.search).get("order");
  if (wanted) openOrder(wanted);
}

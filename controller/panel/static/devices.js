// The device grid: every device as a card (no inner scroll box), filters by kind and state, and the
// controls a supervisor needs on each: take out / put back, pause / resume, reset, e-stop reset.
import { $, el, fill, keyed, post, since, toast } from "./dom.js";

const FILTERS = {
  all: () => true,
  attention: (d) => condition(d) !== "ok",
  faulted: (d) => Boolean(d.fault),
  offline: (d) => !d.online,
  out: (d) => !d.in_rotation,
  paused: (d) => Boolean(d.paused),
  busy: (d) => d.in_flight > 0 || d.queue_length > 0,
  waiting: (d) => (d.waiting_orders ?? 0) > 0,
};
const CONDITION_TEXT = { ok: "available", offline: "offline", faulted: "faulted", out: "out of rotation", paused: "paused" };
const ESTOP_KINDS = new Set(["conveyor", "sorter"]);
let latest = [];
const pending = new Set();  // "device:action" sent and not yet answered

// The one word a card's badge shows, worst first (as the controller's own Availability orders them).
function condition(d) {
  if (!d.online) return "offline";
  if (!d.in_rotation) return "out";
  if (d.paused) return "paused";
  if (d.fault) return "faulted";
  return "ok";
}

function controls(d) {
  const button = (action, text, cls = "") => {
    const key = `${d.device_id}:${action}`;
    return el("button", { type: "button", class: cls, "data-action": action, disabled: pending.has(key),
                          onclick: () => control(d, action, text) }, text);
  };
  return el("div", { class: "controls" },
    d.in_rotation ? button("take_out", "Take out") : button("put_back", "Put back", "primary"),
    "paused" in d ? (d.paused ? button("resume", "Resume", "primary") : button("pause", "Pause")) : null,
    d.fault ? button("reset", "Reset fault") : null,
    d.fault && ESTOP_KINDS.has(d.kind) ? button("estop_reset", "E-stop reset", "danger") : null);
}

async function control(d, action, text) {
  const key = `${d.device_id}:${action}`;
  if (action === "estop_reset" && !confirm(`E-stop reset on ${d.device_id}? Make sure the line is clear.`)) return;
  pending.add(key);
  drawDevices(latest);
  try {
    await post(`/api/devices/${encodeURIComponent(d.device_id)}/control`, { action });
    toast(`${d.device_id}: ${text.toLowerCase()} done`);
  } catch (err) {
    toast(`${d.device_id}: ${text.toLowerCase()} refused: ${err.message}`, true);
  } finally {
    pending.delete(key);
    drawDevices(latest);
  }
}

function card(d) {
  const cond = condition(d);
  const stat = (name, value, cls = "") => el("div", { class: `stat ${cls}` }, el("b", {}, value), el("span", {}, name));
  const waiting = d.waiting_orders ?? null;
  const why = d.unavailable && cond !== "ok" ? String(d.unavailable) : d.fault;
  return el("article", { class: `device ${cond}`, "data-device": d.device_id, "data-condition": cond },
    el("header", {},
      el("span", { class: `dot ${d.online ? "on" : ""}`, title: d.online ? "online" : "offline" }),
      el("b", {}, d.device_id), el("span", { class: "muted small" }, `${d.kind} · ${d.protocol}`),
      el("span", { class: `badge ${cond}` }, CONDITION_TEXT[cond])),
    el("div", { class: "stats" },
      el("div", { class: "stat" }, el("b", {}, d.state)),
      stat("queued", d.queue_length),
      stat("in flight", d.in_flight),
      waiting === null ? null : stat("orders waiting", waiting, waiting ? "warn" : "")),
    why ? el("div", { class: "why" }, why, el("span", { class: "for" })) : null,
    d.in_flight || d.queue_length ? el("div", { class: "muted small progress" }) : null,
    controls(d));
}

export function drawDevices(devices) {
  latest = devices;
  const kinds = [...new Set(devices.map((d) => d.kind))].sort();
  const kindSelect = $("device-kind");
  const have = [...kindSelect.options].map((o) => o.value).slice(1);
  if (have.join() !== kinds.join()) {
    const chosen = kindSelect.value;
    fill(kindSelect, [el("option", { value: "" }, "all kinds"), ...kinds.map((k) => el("option", { value: k }, k))]);
    kindSelect.value = kinds.includes(chosen) ? chosen : "";
  }
  const kind = kindSelect.value;
  const keep = FILTERS[$("device-state").value] ?? FILTERS.all;
  const worst = (d) => ["offline", "faulted", "out", "paused", "ok"].indexOf(condition(d));
  const shown = devices.filter((d) => (!kind || d.kind === kind) && keep(d))
    .sort((a, b) => worst(a) - worst(b) || a.device_id.localeCompare(b.device_id, undefined, { numeric: true }));
  const count = (test) => devices.filter(test).length;
  $("device-summary").textContent = `${devices.length} devices · ${count((d) => !d.online)} offline · `
    + `${count((d) => d.fault)} faulted · ${count((d) => !d.in_rotation)} out of rotation`
    + (devices.some((d) => "paused" in d) ? ` · ${count((d) => d.paused)} paused` : "")
    + (shown.length < devices.length ? ` · ${shown.length} shown` : "");
  // A card's data includes what only the card shows: the pending controls and the time since.
  const view = shown.map((d) => ({ ...d, _pending: [...pending].filter((k) => k.startsWith(`${d.device_id}:`)),
                                   $since: d.unavailable_since ? since(d.unavailable_since) : null,
                                   $progress: d.last_progress_at ? since(d.last_progress_at) : null }));
  keyed($("devices"), view, (d) => d.device_id, card, (node, d) => {
    const lasting = node.querySelector(".for");
    if (lasting) lasting.textContent = d.$since ? ` · for ${d.$since}` : "";
    const progress = node.querySelector(".progress");
    if (progress) progress.textContent = d.$progress ? `last progress ${d.$progress} ago` : "";
  });
  $("devices-none").hidden = shown.length > 0;
}

export function setupDevices() {
  for (const id of ["device-kind", "device-state"]) $(id).addEventListener("change", () => drawDevices(latest));
}

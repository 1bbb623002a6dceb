// The alarm list at the top: active alarms, worst and newest first, each acknowledged by a person;
// the history on demand. Alarms are raised and cleared by the floor, never by the panel.
import { $, api, clock, el, keyed, post, since, toast } from "./dom.js";

const RANK = { critical: 0, warning: 1, info: 2 };
const state = { history: false, acking: new Set() };

const ackedAt = (a) => a.acked_at ?? a.acknowledged_at ?? null;

export function drawAlarms(alarms) {
  const active = [...alarms].sort((a, b) => (RANK[a.severity] ?? 3) - (RANK[b.severity] ?? 3)
    || Date.parse(b.raised_at) - Date.parse(a.raised_at));
  const unacked = active.filter((a) => !ackedAt(a)).length;
  $("alarms").classList.toggle("quiet", active.length === 0);
  $("alarm-count").textContent = active.length
    ? `${active.length} active${unacked ? `, ${unacked} not acknowledged` : ""}` : "none active";
  const rows = active.map((a) => ({ ...a, _acking: state.acking.has(a.id), $age: since(a.raised_at) }));
  keyed($("alarm-list"), rows, (a) => a.id, (a) => el("li", {
      class: `alarm ${a.severity} ${ackedAt(a) ? "acked" : ""}`, "data-alarm": a.id, "data-source": a.source ?? "" },
    el("span", { class: `badge ${a.severity}` }, a.severity),
    el("b", {}, a.source ?? ""),
    el("span", { class: "text" }, a.text ?? a.kind),
    el("span", { class: "muted small age" }),
    ackedAt(a) ? el("span", { class: "muted small" }, `acknowledged${a.acked_by ? ` by ${a.acked_by}` : ""}`)
      : el("button", { type: "button", class: "ack", disabled: a._acking, onclick: () => ack(a) }, "Acknowledge")),
  (node, a) => { node.querySelector(".age").textContent = `${a.$age} ago`; });
}

async function ack(alarm) {
  state.acking.add(alarm.id);
  try {
    await post(`/api/alarms/${alarm.id}/ack`, {});
  } catch (err) {
    toast(`Acknowledge ${alarm.source}: ${err.message}`, true);
  } finally {
    state.acking.delete(alarm.id);
  }
  const page = await api("/api/alarms?active=true").catch(() => null);
  if (page) drawAlarms(page.items ?? page);
}

async function drawHistory() {
  const box = $("alarm-history");
  if (!state.history) { box.replaceChildren(); box.hidden = true; return; }
  box.hidden = false;
  try {
    const page = await api("/api/alarms?limit=50");
    const items = page.items ?? page;
    box.replaceChildren(items.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["raised", "severity", "source", "alarm", "cleared", "acknowledged"].map((h) => el("th", {}, h)))),
      el("tbody", {}, items.map((a) => el("tr", {},
        el("td", {}, clock(a.raised_at)), el("td", {}, a.severity), el("td", {}, a.source),
        el("td", { class: "reason" }, a.text ?? a.kind), el("td", {}, a.cleared_at ? clock(a.cleared_at) : "active"),
        el("td", {}, ackedAt(a) ? `${clock(ackedAt(a))}${a.acked_by ? ` ${a.acked_by}` : ""}` : "–"))))) : el("p", { class: "muted" }, "No alarms yet."));
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, `Alarm history: ${err.message}`));
  }
}

export function setupAlarms() {
  $("alarm-history-toggle").addEventListener("click", () => {
    state.history = !state.history;
    $("alarm-history-toggle").textContent = state.history ? "Hide history" : "History";
    drawHistory();
  });
}

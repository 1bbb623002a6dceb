// Health pills, throughput, stage and device-kind percentiles: drawn from each floor snapshot.
import { $, el, fill, seconds } from "./dom.js";

const LAGGING = 1.5;  // a device this many times its kind's p95 is worth a look
// Stages in the order a tote meets them; a stage the engine adds later is listed after these.
const STAGE_FLOW = ["allocation", "picking", "conveying", "packing", "labelling", "sorting"];

function flowRank(stage) {
  const rank = STAGE_FLOW.indexOf(stage);
  return rank < 0 ? STAGE_FLOW.length : rank;
}

// The engine decides what its health reports: every yes/no (nested ones too) becomes a pill.
export function drawHealth(health) {
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
  fill($("health"), pills);
}

export function drawStats(stats) {
  const throughput = stats.throughput;
  $("last-minute").textContent = throughput.last_minute;
  const peak = Math.max(1, ...throughput.per_minute.map((m) => m.shipped));
  fill($("per-minute"), throughput.per_minute.map((m) => el("div", {
    style: { height: `${(100 * m.shipped) / peak}%` },
    title: `${new Date(m.start * 1000).toLocaleTimeString()}: ${m.shipped} shipped`,
  })));
  $("cycle-p50").textContent = seconds(stats.orders.cycle.p50_s);
  $("cycle-p95").textContent = seconds(stats.orders.cycle.p95_s);
  $("outcomes").textContent = Object.entries(stats.orders.in_window).map(([k, v]) => `${v} ${k}`).join(", ");

  // The longest stage is not the bottleneck (conveying always takes longest): the "What limits the
  // floor" card names that, by utilisation and waiting.
  const stages = Object.entries(stats.stages).sort((a, b) => flowRank(a[0]) - flowRank(b[0]));
  fill($("stages").tBodies[0], stages.map(([stage, d]) => el("tr", {},
    el("td", {}, stage), el("td", { class: "num" }, d.count), el("td", { class: "num" }, seconds(d.p50_s)),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.p99_s)),
    el("td", { class: "num" }, seconds(d.recent_p95_s)))));

  fill($("kinds").tBodies[0], Object.entries(stats.kinds).map(([kind, d]) => el("tr", {},
    el("td", {}, kind), el("td", { class: "num" }, d.count), el("td", { class: "num" }, seconds(d.p50_s)),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.p99_s)),
    el("td", {}, d.slowest ?? "–"))));

  // A conveyor is always slower than a printer; what a supervisor needs is the printer that is slow
  // for a printer. Compare like with like: the device's last-minute p95 over its kind's p95, and list
  // only the devices that lag their peers.
  const lag = (d) => d.recent_p95_s / (stats.kinds[d.kind].p95_s || Infinity);
  const ranked = Object.entries(stats.devices).filter(([, d]) => d.recent_p95_s !== null && stats.kinds[d.kind])
    .filter(([, d]) => lag(d) >= LAGGING).sort((a, b) => lag(b[1]) - lag(a[1])).slice(0, 10);
  $("slow-none").hidden = ranked.length > 0;
  fill($("slow-devices").tBodies[0], ranked.map(([id, d]) => el("tr", { class: "lagging" },
    el("td", {}, id), el("td", {}, d.kind), el("td", { class: "num" }, d.count),
    el("td", { class: "num" }, seconds(d.p95_s)), el("td", { class: "num" }, seconds(d.recent_p95_s)),
    el("td", { class: "num" }, `${lag(d).toFixed(1)}×`))));
}

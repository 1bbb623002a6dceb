// What limits the floor over the last 15 minutes (GET /api/insight): the bottleneck by utilisation
// and waiting, with its evidence, the runner-up, and per kind how busy it is, how long work queues for
// it and the order rate at which it saturates. Worked out on the server at most every 10 s; the panel
// asks every 15 s.
import { $, ApiError, api, el, fill, seconds } from "./dom.js";

const REFRESH_MS = 15000;

const percent = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
const perHour = (x) => (x === null || x === undefined ? "–" : Math.round(x * 3600).toLocaleString());

function finding(title, found) {
  return el("div", { class: "finding" },
    el("h3", {}, `${title}: ${found.label}`),
    el("ul", {}, found.evidence.map((item) => el("li", {}, item))));
}

function bar(utilisation) {
  const share = Math.max(0, Math.min(1, utilisation ?? 0));
  return el("span", { class: `meter${share >= 0.85 ? " hot" : ""}` }, el("span", { style: { width: `${share * 100}%` } }));
}

export function drawInsight(insight) {
  const wall = insight.time_scale === 1 ? ""
    : ` (${seconds(insight.window_s / insight.time_scale)} of the clock at ${insight.time_scale}×)`;
  $("insight-note").textContent = `the last ${seconds(insight.window_s)} of floor time${wall}`;
  const parts = [];
  const found = insight.bottleneck;
  if (found) parts.push(finding("Bottleneck", found));
  else parts.push(el("p", { class: "ok-line" }, insight.verdict));
  if (insight.runner_up) parts.push(finding(found ? "Runner-up" : "First to saturate", insight.runner_up));
  const box = $("insight-verdict");
  box.className = `verdict${found ? " hot" : ""}`;
  fill(box, parts);

  const capacity = Object.fromEntries(insight.capacities.map((c) => [c.kind, c]));
  fill($("insight-kinds").tBodies[0], insight.kinds.map((k) => {
    const c = capacity[k.kind] || {};
    return el("tr", { class: found && found.kind === k.kind ? "bottleneck" : "" },
      el("td", {}, k.kind), el("td", { class: "num" }, bar(k.utilisation), " ", percent(k.utilisation)),
      el("td", { class: "num" }, seconds(k.queue_wait_mean_s)), el("td", { class: "num" }, seconds(k.queue_wait_p95_s)),
      el("td", {}, k.growth.slope === null ? "–" : k.growth.grows ? "growing" : "steady"),
      el("td", { class: "num" }, percent(k.waiting_share)),
      el("td", { class: "num", title: c.formula || "" }, perHour(c.orders_per_s)));
  }));
}

async function refresh() {
  try {
    drawInsight(await api("/api/insight"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;  // on the way to the login page
    $("insight-note").textContent = `not available: ${err.message}`;
  }
}

export function setupInsight() {
  refresh();
  setInterval(refresh, REFRESH_MS);
}

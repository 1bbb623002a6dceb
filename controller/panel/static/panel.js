// The supervisor panel. The controller pushes one floor snapshot a second over Server-Sent Events
// (/api/events/stream); when the stream fails the panel polls the same snapshot (/api/events/latest),
// and when neither answers every pill turns grey: what is shown is no longer known to be true.
// No framework, no build step: ES modules served as they are.
import { drawAlarms, setupAlarms } from "./alarms.js";
import { drawAttention, drawStates, refreshBoard, setupBoard } from "./board.js";
import { drawDevices, setupDevices } from "./devices.js";
import { $, ApiError, api, post, toLogin } from "./dom.js";
import { setupInsight } from "./insight.js";
import { refreshOrder, setupOrder } from "./order.js";
import { drawHealth, drawStats } from "./stats.js";

const POLL_MS = 1500;
const QUIET_MS = 3000;  // no snapshot for this long: the stream is not delivering, poll instead
const STALE_MS = 5000;  // no snapshot for this long from either: the data on screen is stale
const ALARMS_MS = 2000;

const link = { stream: null, streamAt: 0, pollAt: 0, lastAt: 0, polling: false, mode: "connecting",
               alarmsAt: 0, alarmsMissing: false };

function setMode(mode, detail = "") {
  link.mode = mode;
  document.body.classList.toggle("stale", mode === "stale");
  const text = { live: "live", polling: "polling", stale: "controller unreachable", connecting: "connecting" }[mode];
  $("link").textContent = text;
  $("link").className = `link ${mode}`;
  $("banner").hidden = mode !== "stale";
  if (mode === "stale") {
    const last = link.lastAt ? `last data at ${new Date(link.lastAt).toLocaleTimeString()}` : "no data yet";
    $("banner").textContent = `Cannot reach the controller${detail ? ` (${detail})` : ""}: ${last}. Retrying…`;
  }
}

function apply(snapshot, via) {
  if (snapshot.error) {
    $("banner").textContent = `The controller could not take a snapshot: ${snapshot.error}`;
    $("banner").hidden = false;
    return;
  }
  link.lastAt = Date.now();
  if (via === "stream") link.streamAt = link.lastAt;
  setMode(via === "stream" ? "live" : "polling");
  $("site").textContent = snapshot.site;
  const speed = snapshot.speed ?? 1;
  $("speed").hidden = speed === 1;
  $("speed").textContent = `simulation ${speed}× speed`;
  $("updated").textContent = new Date(snapshot.at * 1000).toLocaleTimeString();
  drawHealth(snapshot.health);
  drawStates(snapshot.stats.orders_by_state);
  drawAttention(snapshot.attention);
  drawStats(snapshot.stats);
  drawDevices(snapshot.devices);
  if (snapshot.alarms) drawAlarms(snapshot.alarms);
  else pollAlarms();
  refreshBoard();
  refreshOrder();
}

// A controller whose feed does not carry alarms yet: ask the alarm API itself, now and then.
async function pollAlarms() {
  if (link.alarmsMissing || Date.now() - link.alarmsAt < ALARMS_MS) return;
  link.alarmsAt = Date.now();
  try {
    const page = await api("/api/alarms?active=true");
    drawAlarms(page.items ?? page);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      link.alarmsMissing = true;
      $("alarm-count").textContent = "this controller reports no alarms";
    }
  }
}

function connect() {
  if (!window.EventSource) return;
  const stream = new EventSource("/api/events/stream");
  link.stream = stream;
  stream.addEventListener("floor", (event) => apply(JSON.parse(event.data), "stream"));
  stream.addEventListener("error", () => {
    // The server ends each stream after a while and EventSource reconnects by itself; only a
    // stream the browser gave up on (CLOSED) is opened again here.
    if (stream.readyState === EventSource.CLOSED && link.stream === stream) {
      link.stream = null;
      setTimeout(connect, POLL_MS);
    }
  });
}

async function poll() {
  link.pollAt = Date.now();
  try {
    apply(await api("/api/events/latest"), "poll");
  } catch (err) {
    if (Date.now() - link.lastAt > STALE_MS) setMode("stale", err.message);
  }
}

// Once a second: fall back to polling while the stream is quiet, and say so when nothing answers.
async function watch() {
  const now = Date.now();
  const streamQuiet = now - link.streamAt > QUIET_MS;
  if (streamQuiet && !link.polling && now - link.pollAt >= POLL_MS) {
    link.polling = true;
    await poll();
    link.polling = false;
  }
  if (link.lastAt && Date.now() - link.lastAt > STALE_MS && link.mode !== "stale") setMode("stale");
  else if (!link.lastAt && now - started > STALE_MS && link.mode !== "stale") setMode("stale");
}

// Who is logged in, and the way out.
async function setupSession() {
  $("logout").addEventListener("click", async () => {
    try { await post("/api/auth/logout"); } catch { /* logged out already */ }
    location.assign("/login");
  });
  try {
    const me = await api("/api/auth/me");
    $("who").textContent = `${me.name} (${me.role})`;
    $("logout").hidden = me.via !== "session";
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) $("who").textContent = "";
    else toLogin();
  }
}

const started = Date.now();
setupSession();
setupAlarms();
setupBoard();
setupDevices();
setupOrder();
setupInsight();
connect();
setInterval(watch, 500);

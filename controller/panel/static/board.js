// The order board: a tile per state; a click lists that state's orders (age, due, what each waits
// on) with bulk resolve / cancel. With no state picked it lists the orders needing attention, which
// come with every floor snapshot.
import { $, api, el, fill, keyed, post, since, toast } from "./dom.js";
import { openOrder } from "./order.js";

export const STATES = ["received", "held", "allocated", "picking", "conveyed", "packed", "labelled",
                       "sorted", "shipped", "exception", "cancelled"];
const TERMINAL = new Set(["shipped", "cancelled"]);
const PAGE = 100;
const MAX_PAGE = 1000;  // the API's largest page
const REFRESH_MS = 2000;

const board = { state: null, limit: PAGE, page: null, loadedAt: 0, loading: false, picked: new Set(),
                counts: {}, attention: { items: [], total: 0 } };

export function drawStates(counts) {
  board.counts = counts;
  fill($("states"), STATES.map((state) => {
    const n = counts[state] ?? 0;
    const cls = ["state", state === "exception" && n ? "alert" : "", state === "held" && n ? "hold" : "",
                 state === board.state ? "picked" : ""].join(" ");
    return el("button", { class: cls, type: "button", "data-state": state, "aria-pressed": String(state === board.state),
                          title: `list the orders ${state}`, onclick: () => pickState(state === board.state ? null : state) },
      el("b", {}, n), el("span", {}, state));
  }));
}

export function drawAttention(attention) {
  board.attention = attention;
  if (board.state === null) drawList();
}

// Called on every floor snapshot: the listed state's page is re-read while it is open.
export function refreshBoard() {
  if (board.state !== null && !board.loading && Date.now() - board.loadedAt >= REFRESH_MS) loadState();
}

function pickState(state) {
  board.state = state;
  board.limit = PAGE;
  board.page = null;
  board.picked.clear();
  drawStates(board.counts);
  if (state === null) drawList();
  else { drawList(); loadState(); }
}

async function loadState() {
  const state = board.state;
  board.loading = true;
  board.loadedAt = Date.now();
  try {
    const page = await api(`/api/events/board?state=${state}&limit=${board.limit}`);
    if (state !== board.state) return;  // another state was picked meanwhile
    board.page = page;
    const listed = new Set(page.items.map((o) => o.id));
    for (const id of board.picked) if (!listed.has(id)) board.picked.delete(id);
    drawList();
  } catch (err) {
    $("board-note").textContent = `Cannot list ${state} orders: ${err.message}`;
  } finally {
    board.loading = false;
  }
}

function dueText(at) {
  if (!at) return "–";
  const s = since(at);
  return s.startsWith("in ") ? s : `${s} late`;
}

function waitingText(w) {
  if (!w) return "";
  const device = w.device ?? w.device_id;
  return `${device}${w.reason ? ` · ${w.reason}` : ""} · ${since(w.since)}`;
}

function drawList() {
  const page = board.state === null ? board.attention : board.page;
  const title = board.state === null ? "Needing attention (exception or held)" : `Orders ${board.state}`;
  $("board-title").textContent = title;
  $("board-close").hidden = board.state === null;
  const items = page ? page.items : [];
  const total = page ? page.total : 0;
  $("board-note").textContent = page === null ? "loading…"
    : !total ? (board.state === null ? "Nothing held or in exception." : `No orders ${board.state}.`)
    : items.length < total ? `${items.length} of ${total} shown, oldest first` : `${total} order(s)`;
  $("board").classList.toggle("empty", items.length === 0);
  $("board-more").hidden = !(page && items.length < total && board.state !== null && board.limit < MAX_PAGE);

  const now = Date.now();
  const late = (o) => Boolean(o.due_at) && Date.parse(o.due_at) < now && !TERMINAL.has(o.state);
  const rows = items.map((o) => ({ ...o, _picked: board.picked.has(o.id), _late: late(o), $age: since(o.received_at),
                                   $due: dueText(o.due_at), $waiting: waitingText(o.waiting_on) }));
  keyed($("board-list").tBodies[0], rows, (o) => o.id, (o) => {
    return el("tr", { "data-order": o.id, class: o.state === "exception" ? "problem" : "" },
      el("td", {}, el("input", { type: "checkbox", "aria-label": `select order ${o.id}`, checked: o._picked,
                                  disabled: TERMINAL.has(o.state),
                                  onchange: (e) => { if (e.target.checked) board.picked.add(o.id); else board.picked.delete(o.id); drawBulk(); } })),
      el("td", {}, el("a", { href: `?order=${o.id}`, onclick: (e) => { e.preventDefault(); openOrder(o.id); } }, o.id)),
      el("td", { class: "narrow-hide" }, o.external_id),
      el("td", {}, o.state),
      el("td", { class: "num age" }),
      el("td", { class: `num due ${o._late ? "error" : ""}` }),
      el("td", { class: "reason waits" }),
      el("td", { class: "reason" }, o.reason ?? ""));
  }, (row, o) => {
    row.querySelector(".age").textContent = o.$age;
    row.querySelector(".due").textContent = o.$due;
    row.querySelector(".waits").textContent = o.$waiting;
  });
  drawBulk();
}

function drawBulk() {
  const n = board.picked.size;
  const items = (board.state === null ? board.attention.items : board.page?.items) ?? [];
  const picked = items.filter((o) => board.picked.has(o.id));
  $("bulk-count").textContent = n ? `${n} selected` : "";
  $("bulk-resolve").disabled = !picked.some((o) => o.state === "exception");
  $("bulk-cancel").disabled = !n;
  const open = items.filter((o) => !TERMINAL.has(o.state));
  $("bulk-all").checked = open.length > 0 && open.every((o) => board.picked.has(o.id));
}

function selectAll(checked) {
  const items = (board.state === null ? board.attention.items : board.page?.items) ?? [];
  for (const o of items) if (!TERMINAL.has(o.state)) { if (checked) board.picked.add(o.id); else board.picked.delete(o.id); }
  drawList();
}

// Resolve or cancel the picked orders, a few at a time, after the supervisor confirms.
async function bulk(action) {
  const items = (board.state === null ? board.attention.items : board.page?.items) ?? [];
  const ids = items.filter((o) => board.picked.has(o.id) && (action !== "resolve" || o.state === "exception")).map((o) => o.id);
  if (!ids.length) return;
  const verb = action === "resolve" ? "Resolve" : "Cancel";
  if (!confirm(`${verb} ${ids.length} order(s)?\n${ids.slice(0, 20).join(", ")}${ids.length > 20 ? ", …" : ""}`)) return;
  const failed = [];
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try { await post(`/api/orders/${id}/${action}`); } catch (err) { failed.push(`${id}: ${err.message}`); }
    }
  };
  $("bulk-resolve").disabled = $("bulk-cancel").disabled = true;
  await Promise.all(Array.from({ length: Math.min(8, ids.length) }, worker));
  board.picked.clear();
  const done = ids.length - failed.length;
  toast(`${action === "resolve" ? "Resolved" : "Cancelled"} ${done} of ${ids.length}${failed.length ? `; ${failed.slice(0, 3).join("; ")}` : ""}`,
        failed.length > 0);
  if (board.state !== null) loadState(); else drawList();
}

export function setupBoard() {
  $("board-close").addEventListener("click", () => pickState(null));
  $("board-more").addEventListener("click", () => { board.limit = Math.min(MAX_PAGE, board.limit * 2); loadState(); });
  $("bulk-all").addEventListener("change", (e) => selectAll(e.target.checked));
  $("bulk-resolve").addEventListener("click", () => bulk("resolve"));
  $("bulk-cancel").addEventListener("click", () => bulk("cancel"));
}

// Small helpers every part of the panel uses: DOM building, durations, the JSON API.

export const $ = (id) => document.getElementById(id);

// Build DOM nodes from data: text always goes in as text, never as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function fill(parent, nodes) { parent.replaceChildren(...nodes); }

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function ms(value) { return value === null || value === undefined ? "–" : seconds(value / 1000); }

// "12 s ago" / "in 3.0 min" from an ISO time or epoch seconds, against the browser's clock.
export function since(at) {
  const t = typeof at === "number" ? at * 1000 : Date.parse(at);
  if (!at || Number.isNaN(t)) return "–";
  const s = (Date.now() - t) / 1000;
  return s >= 0 ? seconds(s) : `in ${seconds(-s)}`;
}

export function clock(at) {
  const t = typeof at === "number" ? at * 1000 : Date.parse(at);
  return !at || Number.isNaN(t) ? "–" : new Date(t).toLocaleTimeString();
}

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

// The session: the cookie goes by itself; a state-changing request also sends the CSRF token (the
// login put it in a cookie scripts may read). Requests the panel's timers make say so, and do not
// keep an unattended session alive: only a person's clicks and keys do.
const CSRF_COOKIE = "floorctl_csrf";
const ACTIVE_MS = 10000;
let lastInput = Date.now();
for (const type of ["pointerdown", "keydown"]) addEventListener(type, () => { lastInput = Date.now(); }, true);

export function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${CSRF_COOKIE}=`));
  return found ? decodeURIComponent(found.slice(CSRF_COOKIE.length + 1)) : "";
}

export function toLogin() {
  const back = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(back)}`);
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers ?? {}) };
  if (Date.now() - lastInput > ACTIVE_MS) headers["X-Floorctl-Background"] = "1";
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    toLogin();  // the session ended (idle, logged out elsewhere, controller restarted long ago)
    throw new ApiError("logged out", 401);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok && response.status !== 503) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : `${response.status} ${response.statusText}`;
    throw new ApiError(text, response.status);
  }
  return body;
}

export function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
                     body: body === undefined ? undefined : JSON.stringify(body) });
}

// A short message at the bottom of the screen: what an action did or why it did not.
export function toast(text, bad = false) {
  const box = $("toasts");
  const note = el("div", { class: `toast ${bad ? "bad" : ""}`, role: "status" }, text);
  box.append(note);
  setTimeout(() => note.remove(), bad ? 8000 : 4000);
}

// Redraw a list in place: a child is rebuilt only when its data changed, and the children are moved
// only when their order changed, so a button or checkbox being clicked is not swapped out under the
// pointer by a refresh. Fields named with a leading "$" (ages, counters) are left out of the
// comparison and written by `live(node, item)` on every call instead.
export function keyed(parent, items, key, render, live = null) {
  const cache = parent._keyed ?? (parent._keyed = new Map());
  const nodes = items.map((item) => {
    const id = key(item);
    const sig = JSON.stringify(item, (k, v) => (k.startsWith("$") ? undefined : v));
    const known = cache.get(id);
    const node = known && known.sig === sig ? known.node : render(item);
    cache.set(id, { sig, node });
    if (live) live(node, item);
    return node;
  });
  const wanted = new Set(items.map(key));
  for (const id of cache.keys()) if (!wanted.has(id)) cache.delete(id);
  const same = nodes.length === parent.children.length && nodes.every((n, i) => parent.children[i] === n);
  if (!same) parent.replaceChildren(...nodes);
}

// trackware inspector page: no framework, no build step, nothing from the internet.
// Every value from an app is written with textContent (never parsed as HTML).
"use strict";

const MAX_ROWS = 1000;
const events = new Map(); // event_id -> summary
let selected = null;
let renderQueued = false;
const destinations = new Set();
const pendingReplays = new Map(); // command id -> dead-letter key
const replayStatus = new Map(); // dead-letter key -> text

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (e) { return value; }
  }
  return JSON.stringify(value, null, 2);
}

// --- the list ---------------------------------------------------------------------
function upsert(summary) {
  events.set(summary.event_id, summary);
  for (const dest of Object.keys(summary.outcomes || {})) addDestination(dest);
  if (events.size > MAX_ROWS) {
    const oldest = [...events.values()].sort((a, b) => a.seq - b.seq).slice(0, events.size - MAX_ROWS);
    for (const item of oldest) events.delete(item.event_id);
  }
  queueRender();
  if (selected === summary.event_id) showDetail(selected);
}

function addDestination(name) {
  if (destinations.has(name)) return;
  destinations.add(name);
  const select = document.getElementById("f-destination");
  select.append(el("option", { value: name, text: name }));
}

function filters() {
  const value = (id) => document.getElementById(id).value.trim().toLowerCase();
  return {
    name: value("f-name"), user: value("f-user"), session: value("f-session"),
    destination: document.getElementById("f-destination").value,
    outcome: document.getElementById("f-outcome").value,
  };
}

function matches(item, f) {
  if (f.name && !(item.name || "").toLowerCase().includes(f.name)) return false;
  if (f.user && !(item.user_id || "").toLowerCase().includes(f.user)) return false;
  if (f.session && !(item.session_id || "").toLowerCase().includes(f.session)) return false;
  const outcomes = item.outcomes || {};
  if (f.destination && !(f.destination in outcomes)) return false;
  if (f.outcome) {
    if (f.outcome === "dropped" && item.dropped) return true;
    const wanted = f.destination ? [outcomes[f.destination]] : Object.values(outcomes);
    if (!wanted.includes(f.outcome)) return false;
  }
  return true;
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

function render() {
  renderQueued = false;
  const f = filters();
  const items = [...events.values()].filter((e) => matches(e, f)).sort((a, b) => b.seq - a.seq);
  const list = document.getElementById("events");
  const rows = items.map((item) => {
    const badges = el("div", { class: "badges" });
    if (item.dropped) badges.append(el("span", { class: "badge o-dropped", text: `dropped: ${item.dropped}` }));
    for (const [dest, outcome] of Object.entries(item.outcomes || {}).sort()) {
      badges.append(el("span", {
        class: `badge o-${outcome}`, "data-dest": dest, "data-outcome": outcome,
        text: `${dest}: ${(outcome || "").replace("_", " ")}`,
      }));
    }
    const time = item.timestamp ? item.timestamp.replace("T", " ").replace(/\.\d+/, "") : "";
    return el("li", {
      class: "event", tabindex: "0", role: "button", "data-id": item.event_id,
      "data-name": item.name || "", "data-app": item.app || "", "data-path": item.path || "",
      "data-user": item.user_id || "", "aria-selected": String(item.event_id === selected),
      onclick: () => select(item.event_id),
      onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(item.event_id); } },
    },
      el("div", { class: "name", text: `${item.name || "(event)"}${item.path ? ` ${item.path}` : ""}` }),
      el("div", { class: "meta", text: [time, item.user_id && `user ${item.user_id}`,
        item.session_id && `session ${item.session_id}`, item.app && `${item.app} pid ${item.pid}`]
        .filter(Boolean).join(" · ") }),
      badges);
  });
  list.replaceChildren(...rows);
  document.getElementById("count").textContent = `${items.length} of ${events.size} events`;
}

// --- the detail -------------------------------------------------------------------
function select(eventId) {
  selected = eventId;
  queueRender();
  showDetail(eventId);
}

async function showDetail(eventId) {
  let data;
  try { data = await getJSON(`/api/events/${encodeURIComponent(eventId)}`); } catch (e) {
    document.getElementById("detail").replaceChildren(el("p", { class: "muted", text: String(e) }));
    return;
  }
  if (selected !== eventId) return;
  const detail = document.getElementById("detail");
  const full = data.data || {};
  const parts = [
    el("h2", { text: data.name || "(event)" }),
    el("p", { class: "muted", text: `id ${data.event_id} · ${data.app || ""} pid ${data.pid} on ${data.host || ""}` }),
  ];
  if (data.dropped) {
    parts.push(el("p", { class: "o-dropped", text: `dropped: ${data.dropped.reason}${data.dropped.detail ? ` (${data.dropped.detail})` : ""}` }));
  }
  parts.push(el("h3", { text: "Properties" }), el("pre", { class: "properties", text: pretty(full.properties || {}) }));
  const who = { user_id: full.user_id, anonymous_id: full.anonymous_id, email: full.email, phone: full.phone, traits: full.traits };
  parts.push(el("h3", { text: "Identity" }), el("pre", { class: "identity", text: pretty(who) }));
  parts.push(el("h3", { text: "Context" }), el("pre", { class: "context", text: pretty(full.context || {}) }));
  for (const [dest, slot] of Object.entries(data.outcomes || {}).sort()) {
    const section = el("section", { class: "dest-outcome", "data-dest": dest },
      el("h3", {}, `${dest}: `, el("span", { class: `o-${slot.outcome}`, text: slot.outcome })));
    if (slot.reason) section.append(el("p", { class: "reason", text: `${slot.reason}${slot.status ? ` (HTTP ${slot.status})` : ""}` }));
    for (const x of slot.exchanges || []) {
      section.append(el("div", { class: "exchange" },
        el("div", { class: "line", text: `${x.method} ${x.url} → ${x.status} (${Math.round((x.elapsed || 0) * 1000)} ms)` }),
        el("div", { class: "muted", text: "request body as sent" }),
        el("pre", { class: "request-body", "data-dest": dest, text: x.request_body }),
        el("div", { class: "muted", text: "answer" }),
        el("pre", { class: "response-body", "data-dest": dest, text: x.response_body || "(empty)" })));
    }
    const history = (slot.history || []).filter((h) => h.outcome !== "queued");
    if (history.length > 1) {
      section.append(el("details", {}, el("summary", { text: `${history.length} outcomes` }),
        el("ol", {}, ...history.map((h) => el("li", { text: `${h.outcome}${h.reason ? `: ${h.reason}` : ""}${h.status ? ` (HTTP ${h.status})` : ""}` })))));
    }
    parts.push(section);
  }
  detail.replaceChildren(...parts);
}

// --- destinations -----------------------------------------------------------------
function renderDestinations(data) {
  const box = document.getElementById("destinations");
  const procs = data.processes || [];
  // Events dropped before any destination (sampled, invalid...), and copies
  // the inspector never got (its client's buffer was full or it was away).
  const sum = (maps) => { const out = {}; for (const m of maps) for (const [k, v] of Object.entries(m || {})) out[k] = (out[k] || 0) + v; return out; };
  const dropped = Object.entries(sum(procs.map((p) => p.dropped))).map(([k, v]) => `${k} ${v}`).join(", ");
  const lost = Object.values(sum(procs.map((p) => (p.client || {}).dropped))).reduce((a, b) => a + b, 0);
  document.getElementById("processes").textContent =
    `${procs.length} process${procs.length === 1 ? "" : "es"}: ` + procs.map((p) => `${p.app} pid ${p.pid}`).join(", ") +
    (dropped ? ` · dropped before routing: ${dropped}` : "") + (lost ? ` · copies the inspector missed: ${lost}` : "");
  const cards = (data.destinations || []).map((d) => {
    addDestination(d.name);
    const row = (label, value, cls) => [el("dt", { text: label }), el("dd", { class: cls, text: value })];
    const letters = el("ul", { class: "letters" });
    for (const letter of d.dead_letters || []) {
      const status = el("span", { class: "replay-status muted", text: replayStatus.get(letter.key) || "" });
      const button = el("button", {
        type: "button", class: "replay", "data-key": letter.key, text: "Replay",
        onclick: () => replay(d.name, letter.process, [letter.key], button, status),
      });
      if (!d.replay || replayStatus.has(letter.key)) button.disabled = true;
      letters.append(el("li", { "data-key": letter.key, "data-event-id": letter.event_id || "" },
        el("div", {}, `${letter.event_name || "?"} `, button, " ", status),
        el("div", { class: "why", text: `${letter.reason}${letter.status ? ` (HTTP ${letter.status})` : ""}` })));
    }
    return el("div", { class: "dest", "data-dest": d.name },
      el("h2", { text: d.name }),
      el("dl", {},
        ...row("rate", `${d.rate}/s`), ...row("sent", d.sent), ...row("queue", d.queue_depth),
        ...row("in flight", d.in_flight), ...row("retries", d.retried), ...row("rejected", d.rejected),
        ...row("circuit", d.circuit, `circuit-${d.circuit}`),
        ...row("dead-lettered", d.dead_lettered), ...row("in dead letter", (d.dead_letters || []).length),
        ...row("last error", d.last_error || "—", "last-error")),
      letters);
  });
  box.replaceChildren(...cards);
}

async function replay(destination, processId, keys, button, status) {
  button.disabled = true;
  status.textContent = "replaying…";
  replayStatus.set(keys[0], "replaying…");
  try {
    const response = await fetch("/api/replay", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ process: processId, destination, keys }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    pendingReplays.set(data.id, keys[0]);
  } catch (e) {
    status.textContent = `replay failed: ${e.message}`;
    replayStatus.delete(keys[0]);
    button.disabled = false;
  }
}

function replayDone(result) {
  const key = pendingReplays.get(result.id);
  pendingReplays.delete(result.id);
  const log = document.getElementById("replays");
  let text;
  if (result.ok) {
    text = (result.report && result.report.summary) || "replayed";
    const outcomes = (result.report && result.report.outcomes) || [];
    const refused = outcomes.find((o) => o.outcome !== "delivered" && o.detail);
    if (refused) text += ` (${refused.outcome}: ${refused.detail})`;
  } else {
    text = `replay failed: ${result.error}`;
  }
  log.prepend(el("p", { class: "replay-result", "data-id": result.id, "data-ok": String(!!result.ok), text }));
  if (key !== undefined) {
    replayStatus.set(key, text);
    for (const node of document.querySelectorAll(`li[data-key="${CSS.escape(key)}"] .replay-status`)) node.textContent = text;
  }
}

// --- live -------------------------------------------------------------------------
async function reload() {
  const [list, dests] = await Promise.all([getJSON("/api/events"), getJSON("/api/destinations")]);
  events.clear();
  for (const item of list.events) upsert(item);
  renderDestinations(dests);
  queueRender();
}

function connect() {
  const status = document.getElementById("status");
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    status.textContent = "live";
    status.dataset.state = "live";
    reload().catch((e) => { status.textContent = String(e); });
  });
  source.addEventListener("error", () => {
    status.textContent = "reconnecting…";
    status.dataset.state = "down";
  });
  source.addEventListener("event", (m) => upsert(JSON.parse(m.data)));
  source.addEventListener("update", (m) => upsert(JSON.parse(m.data)));
  source.addEventListener("destinations", (m) => renderDestinations(JSON.parse(m.data).destinations));
  source.addEventListener("replay", (m) => replayDone(JSON.parse(m.data)));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filters").addEventListener("input", queueRender);
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  connect();
});

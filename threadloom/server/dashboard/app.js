// threadloom dashboard: plain JavaScript, no framework, no build step.
//
// It reads and acts only through the public HTTP API, as a script could: the key the user
// signs in with lives in sessionStorage (this tab only) and travels in the X-API-Key header;
// it is never put in a URL, a cookie or storage that outlives the tab.
"use strict";

const KEY = "threadloom.key";
const NAMESPACE = "threadloom.namespace";
const PAGE = 1000; // the API's largest page
const MAX_PAGES = 50; // a list longer than this many pages is shown in part, and says so
const FAILED = new Set(["ERRORED", "TIMEDOUT", "RETRY_CREATED"]);
const ACTIVE = new Set(["CREATED", "RUNNING", "INTERRUPTED"]); // may be cancelled
const RETRYABLE = new Set(["ERRORED", "TIMEDOUT", "CANCELLED"]); // may be retried
const ICONS = {
  SUCCESS: "\u2714", ERRORED: "\u2716", TIMEDOUT: "\u23F1", INTERRUPTED: "\u23F8",
  CANCELLED: "\u2298", RETRY_CREATED: "\u21BB", CREATED: "\u25CB", QUEUED: "\u25B6",
  RUNNING: "\u25B6",
};

const session = { me: null, namespace: null };
const runsView = { cursor: null, next: null, pages: [], selected: new Set(), timer: null };
const statesView = { chosen: null };

// -- small helpers -----------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "onclick" || name === "onsubmit" || name === "onchange") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "className") {
      node.className = value;
    } else if (name === "style") {
      Object.assign(node.style, value); // through the CSSOM: the page's CSP refuses style attributes
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function json(value) { return JSON.stringify(value, null, 2); }

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// A time in milliseconds, keeping the microseconds the API gives (Date.parse drops them).
function instant(iso) {
  const fraction = /\.(\d+)/.exec(iso);
  return Date.parse(iso.replace(/\.\d+/, "")) + (fraction ? Number(`0.${fraction[1]}`) * 1000 : 0);
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "\u2013"; }

// The time of day to the millisecond: a run's log records are often within one second.
function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
    hour12: false }) : "\u2013";
}

function ms(value) {
  if (value === null || value === undefined) return "\u2013";
  if (value < 1000) return `${Number(value).toFixed(value < 100 ? 2 : 0)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

function badge(status) {
  return el("span", { className: `badge ${status}` }, status);
}

function flash(message, bad) {
  const box = $("flash");
  box.textContent = message;
  box.className = bad ? "flash bad" : "flash";
}

function failure(err) { flash(err.message || String(err), true); }

function may(role) {
  const order = ["viewer", "operator", "admin"];
  return session.me && order.indexOf(session.me.role) >= order.indexOf(role);
}

// -- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${message} (${status} ${code})`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, key) {
  const headers = { "X-API-Key": key || sessionStorage.getItem(KEY) || "" };
  if (session.me && session.me.namespaces.includes("*") && session.namespace) {
    headers["X-Namespace"] = session.namespace; // an all-namespace key picks one
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    if (response.status === 401 && !key) signOut("The key was refused: sign in again.");
    throw new ApiError(response.status, (data && data.code) || "http_error",
                       (data && data.message) || response.statusText);
  }
  return data;
}

function ns(path) { return `/v0/namespace/${encodeURIComponent(session.namespace)}${path}`; }

function query(params) {
  const parts = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return parts.length ? "?" + new URLSearchParams(parts).toString() : "";
}

// Every page of a cursor-paginated list (`field` holds the items).
async function allPages(path, params, field) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const data = await api("GET", path + query({ ...params, limit: PAGE, cursor }));
    items.push(...data[field]);
    cursor = data.next_cursor;
    if (!cursor) return { items, complete: true };
  }
  return { items, complete: false };
}

// -- sign in and out ---------------------------------------------------------------------

async function signIn(key) {
  const me = await api("GET", "/v0/me", undefined, key);
  sessionStorage.setItem(KEY, key);
  session.me = me;
  const saved = sessionStorage.getItem(NAMESPACE);
  const covers = me.namespaces.includes("*") || me.namespaces.includes(saved);
  session.namespace = saved && covers ? saved : me.namespace;
  showApp();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(NAMESPACE);
  session.me = null;
  stopAutoRefresh();
  $("app").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("api-key").value = "";
  $("login-error").textContent = message || "";
  $("api-key").focus();
}

function showApp() {
  const me = session.me;
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  document.body.classList.toggle("viewer", !may("operator"));
  $("who-text").textContent = `${me.role} key ${me.key_id || ""}`;
  const all = me.namespaces.includes("*");
  const several = !all && me.namespaces.length > 1;
  $("ns-label").hidden = !(all || several);
  $("ns-select").hidden = !several;
  $("ns-input").hidden = !all;
  $("ns-label").htmlFor = all ? "ns-input" : "ns-select";
  if (several) {
    $("ns-select").replaceChildren(...me.namespaces.map((n) => el("option", { value: n }, n)));
    $("ns-select").value = session.namespace;
  }
  if (all) $("ns-input").value = session.namespace;
  selectTab("tab-runs");
}

function changeNamespace(name) {
  if (!name) return;
  session.namespace = name;
  sessionStorage.setItem(NAMESPACE, name);
  runsView.pages = [];
  runsView.cursor = null;
  statesView.chosen = null;
  selectTab(currentTab());
}

// -- tabs --------------------------------------------------------------------------------

const TABS = {
  "tab-runs": loadRuns, "tab-states": loadStates, "tab-threads": loadThreads,
  "tab-review": loadReview,
};

function tabs() { return [...document.querySelectorAll('[role="tab"]')]; }

function currentTab() {
  const selected = tabs().find((t) => t.getAttribute("aria-selected") === "true");
  return selected ? selected.id : "tab-runs";
}

function selectTab(id, focus) {
  for (const tab of tabs()) {
    const on = tab.id === id;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
    if (on && focus) tab.focus();
  }
  $("run-detail").hidden = true;
  flash("");
  TABS[id]().catch(failure);
}

function tabKeys(event) {
  const all = tabs();
  const at = all.indexOf(document.activeElement);
  if (at < 0) return;
  const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(all[(moves[event.key] + all.length) % all.length].id, true);
}

function showDetail() {
  for (const tab of tabs()) $(tab.getAttribute("aria-controls")).hidden = true;
  $("run-detail").hidden = false;
}

// -- Runs --------------------------------------------------------------------------------

function runFilters() {
  const form = $("run-filters");
  const value = (name) => form.elements[name].value.trim();
  const time = (name) => (value(name) ? new Date(value(name)).toISOString() : "");
  return { status: value("status"), graph: value("graph"), since: time("since"),
           until: time("until"), run_id_prefix: value("run_id_prefix"), limit: value("limit") };
}

async function loadRuns() {
  const data = await api("GET", ns("/runs") + query({ ...runFilters(), cursor: runsView.cursor }));
  runsView.next = data.next_cursor;
  const page = runsView.pages.length + 1;
  $("runs-count").textContent = `${data.count} runs on page ${page}`;
  $("runs-next").disabled = !data.next_cursor;
  $("runs-first").disabled = !runsView.cursor;
  const visible = new Set(data.runs.map((r) => r.run_id));
  for (const id of [...runsView.selected]) if (!visible.has(id)) runsView.selected.delete(id);
  const rows = data.runs.map((run) => el("tr", { className: FAILED.has(run.status) ? "failed" : null },
    el("td", { className: "operator-only" }, el("input", {
      type: "checkbox", "aria-label": `Select run ${run.run_id}`, "data-run": run.run_id,
      checked: runsView.selected.has(run.run_id),
      onchange: (e) => {
        if (e.target.checked) runsView.selected.add(run.run_id);
        else runsView.selected.delete(run.run_id);
      },
    })),
    el("td", {}, badge(run.status)),
    el("td", {}, run.graph_name),
    el("td", {}, el("button", { type: "button", className: "link mono",
                                onclick: () => openThread(run.thread_id) }, run.thread_id)),
    el("td", {}, el("button", { type: "button", className: "link mono run-link",
                                onclick: () => openRun(run.run_id) }, run.run_id)),
    el("td", {}, when(run.started_at)),
    el("td", {}, ms(run.duration_ms)),
    el("td", {}, run.steps)));
  $("runs-table").tBodies[0].replaceChildren(...rows);
  $("select-all").checked = data.runs.length > 0 && data.runs.every((r) => runsView.selected.has(r.run_id));
  fillGraphNames().catch(() => {});
}

let graphNamesLoaded = false;

async function fillGraphNames() {
  if (graphNamesLoaded) return;
  const found = await api("POST", "/assistants/search", { limit: 1000 });
  graphNamesLoaded = true;
  const names = [...new Set(found.map((a) => a.graph_id))].sort();
  $("graph-names").replaceChildren(...names.map((n) => el("option", { value: n })));
}

async function bulk(action) {
  const ids = [...runsView.selected];
  if (!ids.length) { flash("Select runs first (the boxes in the first column).", true); return; }
  const failed = [];
  for (const id of ids) {
    try {
      await api("POST", ns(`/runs/${encodeURIComponent(id)}/${action}`));
    } catch (err) {
      failed.push(`${id}: ${err.message}`);
    }
  }
  runsView.selected.clear();
  await loadRuns();
  const done = ids.length - failed.length;
  const verb = action === "cancel" ? "Cancelled" : "Retried";
  flash(`${verb} ${done} of ${ids.length} runs.` + (failed.length ? ` Refused: ${failed.join("; ")}` : ""),
        failed.length > 0);
}

function stopAutoRefresh() {
  if (runsView.timer) clearInterval(runsView.timer);
  runsView.timer = null;
  $("auto-refresh").checked = false;
}

function autoRefresh(on) {
  if (runsView.timer) clearInterval(runsView.timer);
  runsView.timer = on ? setInterval(() => {
    if (!$("panel-runs").hidden) loadRuns().catch(failure);
  }, 5000) : null;
}

// -- Run States (seed 001) ---------------------------------------------------------------

function stateCard(state) {
  const parents = Object.entries(state.parents || {});
  return el("article", { className: `card state${FAILED.has(state.status) ? " failed" : ""}`,
                         "data-state": state.id },
    el("header", {},
      el("span", { "aria-hidden": "true" }, ICONS[state.status] || "\u2022"),
      badge(state.status),
      el("strong", {}, state.node_name),
      el("span", { className: "muted" }, `identifier ${state.identifier}`),
      el("span", { className: "muted" }, `attempt ${state.attempt}`)),
    el("dl", { className: "kv" },
      el("dt", {}, "State id"), el("dd", { className: "mono" }, state.id),
      el("dt", {}, "Created"), el("dd", {}, when(state.created_at)),
      el("dt", {}, "Inputs"), el("dd", {}, el("pre", {}, json(state.inputs))),
      el("dt", {}, "Outputs"), el("dd", {}, el("pre", {}, json(state.outputs))),
      el("dt", {}, "Parents"), el("dd", {}, parents.length
        ? el("ul", {}, parents.map(([id, sid]) => el("li", { className: "mono" }, `${id} \u2192 ${sid}`)))
        : "none"),
      state.error ? [el("dt", {}, "Error"), el("dd", { className: "error" }, state.error)] : null));
}

async function loadStates() {
  const { items, complete } = await allPages(ns("/states/"), {}, "states");
  const perRun = new Map();
  for (const state of items) perRun.set(state.run_id, (perRun.get(state.run_id) || 0) + 1);
  const completed = items.filter((s) => s.status === "SUCCESS").length;
  const stat = (label, n) => el("div", { className: "stat" }, el("span", { className: "n" }, n), label);
  $("states-summary").replaceChildren(
    stat("Total States", items.length), stat("Unique Run IDs", perRun.size),
    stat("Completed States", completed),
    ...(complete ? [] : [el("p", { className: "muted" }, `showing the newest ${items.length} states`)]));
  $("run-picker").replaceChildren(...[...perRun.entries()].map(([runId, count]) => el("button", {
    type: "button", "aria-pressed": String(runId === statesView.chosen),
    "data-run": runId, onclick: () => chooseRun(runId),
  }, el("span", { className: "mono" }, runId), el("span", { className: "muted" }, `${count} states`))));
  if (statesView.chosen && perRun.has(statesView.chosen)) await chooseRun(statesView.chosen);
  else $("run-states").replaceChildren(items.length
    ? el("p", { className: "muted" }, "Choose a run id to see its states.")
    : el("p", { className: "muted" }, "No states in this namespace yet."));
}

async function chooseRun(runId) {
  statesView.chosen = runId;
  for (const b of $("run-picker").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(b.dataset.run === runId));
  }
  const { items } = await allPages(ns(`/states/run/${encodeURIComponent(runId)}`), {}, "states");
  $("run-states").replaceChildren(
    el("div", { className: "bar" }, el("h3", {}, `Run ${runId}: ${items.length} states`),
       el("button", { type: "button", onclick: () => openRun(runId) }, "Open run detail")),
    el("div", { className: "cards" }, items.map(stateCard)));
}

// -- Run detail --------------------------------------------------------------------------

async function findRun(runId) {
  const data = await api("GET", ns("/runs") + query({ run_id_prefix: runId, limit: PAGE }));
  const run = data.runs.find((r) => r.run_id === runId);
  if (!run) throw new Error(`no run ${runId} in namespace ${session.namespace}`);
  return run;
}

async function openRun(runId) {
  stopAutoRefresh();
  showDetail();
  $("run-title").textContent = `Run ${runId}`;
  $("run-title").focus(); // keyboard users land on the run they opened
  $("detail-body").replaceChildren(el("p", { className: "muted" }, "Loading\u2026"));
  try {
    await renderRun(await findRun(runId));
  } catch (err) {
    $("detail-body").replaceChildren(el("p", { className: "error" }, err.message));
  }
}

async function renderRun(run) {
  const id = encodeURIComponent(run.run_id);
  const tid = encodeURIComponent(run.thread_id);
  const [states, checkpoints, metrics, logs, graph] = await Promise.allSettled([
    allPages(ns(`/states/run/${id}`), {}, "states"),
    allPages(ns(`/runs/${id}/checkpoints`), {}, "checkpoints"),
    api("GET", ns(`/runs/${id}/metrics`)),
    api("GET", `/threads/${tid}/runs/${id}/logs`),
    api("GET", `/assistants/${encodeURIComponent(run.graph_name)}/graph`),
  ]);
  const executions = states.status === "fulfilled" ? states.value.items : [];
  const steps = checkpoints.status === "fulfilled" ? checkpoints.value.items : [];
  const refresh = () => openRun(run.run_id);
  $("detail-body").replaceChildren(
    el("div", { className: "cols" },
      el("section", {},
        el("dl", { className: "kv" },
          el("dt", {}, "Status"), el("dd", {}, badge(run.status)),
          el("dt", {}, "Graph"), el("dd", {}, run.graph_name),
          el("dt", {}, "Thread"), el("dd", {}, el("button", {
            type: "button", className: "link mono", onclick: () => openThread(run.thread_id),
          }, run.thread_id)),
          el("dt", {}, "Created"), el("dd", {}, when(run.created_at)),
          el("dt", {}, "Started"), el("dd", {}, when(run.started_at)),
          el("dt", {}, "Ended"), el("dd", {}, when(run.ended_at)),
          el("dt", {}, "Duration"), el("dd", {}, ms(run.duration_ms)),
          el("dt", {}, "Steps"), el("dd", {}, run.steps),
          run.error ? [el("dt", {}, "Error"), el("dd", { className: "error" }, run.error)] : null),
        el("div", { className: "actions" },
          el("button", { type: "button", onclick: refresh }, "Refresh"),
          el("span", { className: "operator-only" },
            ACTIVE.has(run.status) ? el("button", { type: "button", className: "danger",
              onclick: () => runAction(run, "cancel") }, "Cancel run") : null, " ",
            RETRYABLE.has(run.status) ? el("button", { type: "button",
              onclick: () => runAction(run, "retry") }, "Retry run") : null))),
      el("section", { className: "graph" }, el("h3", {}, "Graph"),
        graph.status === "fulfilled" ? drawGraph(graph.value, executions, run)
          : el("p", { className: "muted" }, `No graph: ${graph.reason.message}`))),
    el("h3", {}, "Timeline"), timeline(executions, run, metrics),
    el("h3", {}, "Metrics"), metrics.status === "fulfilled" ? metricsView(metrics.value)
      : el("p", { className: "error" }, metrics.reason.message),
    el("h3", {}, "State after each step"), stepsView(steps, run, refresh),
    el("h3", {}, "Logs"), logsView(logs));
}

async function runAction(run, action) {
  try {
    const item = await api("POST", ns(`/runs/${encodeURIComponent(run.run_id)}/${action}`));
    await renderRun(item);
    flash(`Run ${run.run_id} is now ${item.status}.`);
  } catch (err) { failure(err); }
}

function timeline(executions, run, metrics) {
  const start = (e) => instant(e.started_at || e.created_at);
  const end = (e) => instant(e.ended_at || e.updated_at || e.started_at || e.created_at);
  const ordered = [...executions].sort((a, b) => start(a) - start(b));
  const queueWait = metrics.status === "fulfilled" ? metrics.value.queue_wait_ms : undefined;
  if (!ordered.length) return el("p", { className: "muted" }, "No executions yet.");
  const t0 = Math.min(...ordered.map(start));
  const span = Math.max(1, Math.max(...ordered.map(end)) - t0);
  return el("div", { className: "timeline" },
    queueWait !== undefined && queueWait !== null
      ? el("p", {}, `Queue wait before the first step: ${ms(queueWait)}`) : null,
    el("table", { className: "grid" },
      el("thead", {}, el("tr", {}, ["#", "Node", "Identifier", "Attempt", "Status", "Starts at",
                                    "Duration", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ordered.map((e, i) => {
        const took = e.started_at && e.ended_at ? instant(e.ended_at) - instant(e.started_at) : null;
        const left = ((start(e) - t0) / span) * 100;
        const width = Math.max(0.5, ((end(e) - start(e)) / span) * 100);
        return el("tr", { className: FAILED.has(e.status) ? "failed" : null, "data-state": e.id },
          el("td", {}, i + 1), el("td", {}, e.node_name), el("td", {}, e.identifier),
          el("td", {}, e.attempt), el("td", {}, badge(e.status)),
          el("td", {}, `+${ms(start(e) - t0)}`), el("td", {}, ms(took)),
          el("td", {}, el("div", { className: "track", title: e.error || "" },
            el("div", { className: "span", style: { left: `${left}%`, width: `${width}%` } }))));
      }))));
}

// Readable names of the metrics route's fields; a field not named here shows under its own.
const METRIC_LABELS = {
  status: "Status", steps: "Steps", executions: "Executions", attempts: "Attempts",
  retries: "Retries", run_attempts: "Run attempts", duration_ms: "Duration",
  queue_wait_ms: "Queue wait", bytes_written: "Bytes written", trace_id: "Trace id",
  as_of: "As of",
};

function size(bytes) {
  if (bytes === null || bytes === undefined) return "\u2013";
  if (bytes < 1024) return `${bytes} B`;
  const [n, unit] = bytes < 1024 * 1024 ? [bytes / 1024, "KiB"] : [bytes / 1024 / 1024, "MiB"];
  return `${n.toFixed(1)} ${unit} (${bytes.toLocaleString("en")} B)`;
}

function metricValue(key, value) {
  if (key.endsWith("_ms")) return ms(value);
  if (key.startsWith("bytes_")) return size(value);
  if (key === "as_of" || key.endsWith("_at")) return when(value);
  return value === null || value === undefined ? "\u2013" : String(value);
}

function metricsView(m) {
  const scalars = Object.entries(m).filter(([k, v]) => !isObject(v) && !["namespace", "run_id"].includes(k));
  const nodes = Object.entries(m.nodes || {});
  return el("div", { className: "cols metrics" },
    el("dl", { className: "kv" }, scalars.map(([k, v]) => [
      el("dt", { title: k }, METRIC_LABELS[k] || k),
      el("dd", { "data-metric": k, className: k === "trace_id" ? "mono" : null }, metricValue(k, v))])),
    el("div", {},
      el("table", { className: "grid" },
        el("thead", {}, el("tr", {}, ["Node", "Count", "Total", "Mean", "Max"].map((h) => el("th", {}, h)))),
        el("tbody", {}, nodes.map(([name, n]) => el("tr", {}, el("td", {}, name), el("td", {}, n.count),
          el("td", {}, ms(n.total_ms)), el("td", {}, ms(n.mean_ms)), el("td", {}, ms(n.max_ms)))))),
      el("p", { className: "muted" }, "States by status: " +
        (Object.entries(m.states_by_status || {}).map(([s, n]) => `${s} ${n}`).join(", ") || "none"))));
}

// The differences between two JSON values, key by key and item by item, nested.
function diff(before, after, path) {
  path = path || "";
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => {
      const at = path ? `${path}.${k}` : k;
      if (!(k in before)) return [{ kind: "added", path: at, after: after[k] }];
      if (!(k in after)) return [{ kind: "removed", path: at, before: before[k] }];
      return diff(before[k], after[k], at);
    });
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    const out = [];
    for (let i = 0; i < Math.max(before.length, after.length); i += 1) {
      const at = `${path}[${i}]`;
      if (i >= before.length) out.push({ kind: "added", path: at, after: after[i] });
      else if (i >= after.length) out.push({ kind: "removed", path: at, before: before[i] });
      else out.push(...diff(before[i], after[i], at));
    }
    return out;
  }
  if (JSON.stringify(before) === JSON.stringify(after)) return [];
  return [{ kind: "changed", path: path || "(whole state)", before, after }];
}

function diffView(changes) {
  if (!changes.length) return el("p", { className: "muted" }, "No change.");
  const short = (v) => JSON.stringify(v);
  return el("ul", { className: "diff" }, changes.map((c) => el("li", { className: c.kind, "data-kind": c.kind },
    `${c.kind} `, el("span", { className: "path mono" }, c.path), ": ",
    el("code", {}, c.kind === "added" ? short(c.after) : c.kind === "removed" ? short(c.before)
      : `${short(c.before)} \u2192 ${short(c.after)}`))));
}

function stepsView(steps, run, refresh) {
  if (!steps.length) return el("p", { className: "muted" }, "No checkpoints.");
  return el("div", { className: "cards steps" }, steps.map((cp, i) => {
    const before = i === 0 ? {} : steps[i - 1].values;
    const writers = Object.keys(cp.writes || {});
    return el("article", { className: "card step", "data-step": cp.step },
      el("header", {}, el("strong", {}, `Step ${cp.step}`),
        el("span", { className: "muted" }, writers.length ? `written by ${writers.join(", ")}` : "input"),
        el("span", { className: "muted" }, `next: ${cp.next.join(", ") || "(end)"}`),
        el("span", { className: "muted mono" }, cp.checkpoint_id)),
      diffView(diff(before, cp.values)),
      el("details", {}, el("summary", {}, "State"), el("pre", {}, json(cp.values))),
      el("details", { className: "operator-only" }, el("summary", {}, "Fork from this step"),
        forkForm(run, cp, refresh)));
  }));
}

function forkForm(run, cp, done) {
  const area = el("textarea", { "aria-label": `State to fork from step ${cp.step}` }, json(cp.values));
  return el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const values = JSON.parse(area.value);
        const tid = encodeURIComponent(run.thread_id);
        const update = await api("POST", `/threads/${tid}/state`, { values, checkpoint_id: cp.checkpoint_id });
        const created = await api("POST", `/threads/${tid}/runs`, {
          assistant_id: run.graph_name, input: null,
          checkpoint_id: update.checkpoint.checkpoint_id,
        });
        flash(`Forked from step ${cp.step}: run ${created.run_id} started.`);
        if (done) await done();
      } catch (err) { failure(err); }
    },
  }, area, el("div", { className: "actions" }, el("button", { type: "submit" }, "Fork and run")));
}

function logsView(result) {
  if (result.status === "rejected" || !result.value || !result.value.logs || !result.value.logs.length) {
    if (result.status === "rejected" && result.reason.status !== 404) {
      return el("p", { className: "error" }, `Logs: ${result.reason.message}`);
    }
    return el("p", { className: "muted" }, "No logs");
  }
  return el("table", { className: "grid logs" },
    el("thead", {}, el("tr", {}, ["#", "At", "Level", "Node", "Attempt", "Logger", "Message"].map((h) => el("th", {}, h)))),
    el("tbody", {}, result.value.logs.map((l) => el("tr", { className: l.level },
      el("td", {}, l.seq), el("td", { title: when(l.at) }, clock(l.at)), el("td", {}, l.level),
      el("td", {}, l.node || ""),
      el("td", {}, l.attempt ?? ""), el("td", {}, l.logger),
      el("td", {}, el("pre", {}, l.message + (l.exc ? `\n${l.exc}` : "")))))));
}

// The graph as a layered drawing: each node one layer below the longest path to it from the
// start (back edges of loops are left out of the layering and drawn curving on the right).
function drawGraph(graph, executions, run) {
  const ids = graph.nodes.map((n) => n.id);
  const out = new Map(ids.map((id) => [id, []]));
  for (const e of graph.edges) if (out.has(e.source) && out.has(e.target)) out.get(e.source).push(e.target);
  const back = new Set();
  const seen = new Map(); // 1: on the DFS path, 2: done
  const visit = (id) => {
    seen.set(id, 1);
    for (const next of out.get(id)) {
      if (seen.get(next) === 1) back.add(`${id}\u0000${next}`);
      else if (!seen.has(next)) visit(next);
    }
    seen.set(id, 2);
  };
  if (out.has("__start__")) visit("__start__");
  for (const id of ids) if (!seen.has(id)) visit(id);
  const layer = new Map(ids.map((id) => [id, 0]));
  for (let round = 0; round < ids.length; round += 1) {
    for (const e of graph.edges) {
      if (back.has(`${e.source}\u0000${e.target}`) || !layer.has(e.source) || !layer.has(e.target)) continue;
      layer.set(e.target, Math.max(layer.get(e.target), layer.get(e.source) + 1));
    }
  }
  const rows = [];
  for (const id of ids) (rows[layer.get(id)] = rows[layer.get(id)] || []).push(id);
  const W = 140; const H = 32; const GX = 30; const GY = 46;
  const widest = Math.max(...rows.map((r) => (r ? r.length : 0)));
  const width = widest * (W + GX) + 80; const height = rows.length * (H + GY) + 20;
  const pos = new Map();
  rows.forEach((row, y) => (row || []).forEach((id, x) => {
    const offset = (width - 80 - row.length * (W + GX)) / 2;
    pos.set(id, { x: 20 + offset + x * (W + GX), y: 10 + y * (H + GY) });
  }));
  const visited = new Set(executions.map((e) => e.identifier));
  if (executions.length) visited.add("__start__");
  if (run.status === "SUCCESS") visited.add("__end__");
  const last = [...executions].sort((a, b) => Date.parse(a.started_at || a.created_at)
    - Date.parse(b.started_at || b.created_at)).pop();
  const current = run.status === "SUCCESS" ? "__end__" : last ? last.identifier : null;
  const drawing = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Graph ${run.graph_name}: visited ${[...visited].join(", ") || "nothing"}; current ${current || "none"}` });
  drawing.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa3b5" }))));
  for (const e of graph.edges) {
    const a = pos.get(e.source); const b = pos.get(e.target);
    if (!a || !b) continue;
    let d;
    if (back.has(`${e.source}\u0000${e.target}`) || layer.get(e.target) <= layer.get(e.source)) {
      const x = Math.max(a.x, b.x) + W;
      d = `M${a.x + W},${a.y + H / 2} C${x + 40},${a.y + H / 2} ${x + 40},${b.y + H / 2} ${b.x + W},${b.y + H / 2}`;
    } else {
      d = `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${a.y + H + GY / 2} ${b.x + W / 2},${b.y - GY / 2} ${b.x + W / 2},${b.y}`;
    }
    drawing.append(svg("path", { d, class: `edge${e.conditional ? " conditional" : ""}`, "marker-end": "url(#arrow)" }));
  }
  for (const id of ids) {
    const p = pos.get(id);
    const kind = id === current ? "current" : visited.has(id) ? "visited" : "";
    drawing.append(svg("g", { class: `node ${kind}`, "data-node": id, transform: `translate(${p.x},${p.y})` },
      svg("title", {}, `${id}${kind ? ` (${kind})` : ""}`),
      svg("rect", { width: W, height: H, rx: 6 }),
      svg("text", { x: W / 2, y: H / 2 + 4, "text-anchor": "middle" }, id.length > 18 ? id.slice(0, 17) + "\u2026" : id)));
  }
  return el("div", {}, drawing, el("div", { className: "legend" },
    el("span", {}, "blue: visited"), el("span", {}, "yellow: current or last node"), el("span", {}, "dashed: conditional edge")));
}

// -- Review (human in the loop) ----------------------------------------------------------

function interruptsOf(state) {
  if (state.interrupts && state.interrupts.length) return state.interrupts;
  return (state.tasks || []).flatMap((t) => t.interrupts || []);
}

// Every run that waits for a human. A resumed run keeps its status (as on LangGraph's
// server, the resume is a new run of the thread), so a run is listed only while its thread
// still waits on it: the thread's state has interrupts and its newest run is that run.
async function loadReview() {
  const { items } = await allPages(ns("/runs"), { status: "INTERRUPTED" }, "runs");
  const found = await Promise.all(items.map(async (run) => {
    try {
      const tid = encodeURIComponent(run.thread_id);
      const [state, newest] = await Promise.all([
        api("GET", `/threads/${tid}/state`), api("GET", `/threads/${tid}/runs?limit=1`)]);
      if (!interruptsOf(state).length || !newest.length || newest[0].run_id !== run.run_id) return null;
      return reviewCard(run, state);
    } catch (err) {
      return el("article", { className: "card" }, `Run ${run.run_id}: ${err.message}`);
    }
  }));
  const cards = found.filter((card) => card !== null);
  $("review-count").textContent = `${cards.length} runs wait for a human`;
  $("review-list").replaceChildren(cards.length ? el("div", { className: "cards" }, cards)
    : el("p", { className: "muted" }, "Nothing waits for a human in this namespace."));
}

function parseField(text, original) {
  if (typeof original === "string") return text;
  try { return JSON.parse(text); } catch (_) { return text; }
}

function reviewCard(run, state) {
  const interrupts = interruptsOf(state);
  const payload = interrupts.length ? interrupts[0].value : null;
  const tid = encodeURIComponent(run.thread_id);
  const resume = async (value) => {
    const created = await api("POST", `/threads/${tid}/runs`, { assistant_id: run.graph_name, command: { resume: value } });
    await loadReview();
    flash(`Resumed: run ${created.run_id} on thread ${run.thread_id}.`);
  };
  const act = (fn) => async (event) => {
    if (event) event.preventDefault();
    try { await fn(); } catch (err) { failure(err); }
  };
  const label = (text, control) => [el("label", { for: control.id }, text), control];
  const uid = run.run_id.replace(/[^A-Za-z0-9_-]/g, "_");

  let form = null;
  if (isObject(payload)) {
    const fields = Object.entries(payload).map(([k, v], i) => [k, v, el("input", {
      id: `f-${uid}-${i}`, name: k, value: typeof v === "string" ? v : JSON.stringify(v) })]);
    form = el("form", { className: "resume-form", onsubmit: act(() => resume(Object.fromEntries(
      fields.map(([k, v, input]) => [k, parseField(input.value, v)])))) },
      el("div", { className: "form-grid" }, fields.map(([k, , input]) => label(k, input))),
      el("button", { type: "submit", className: "primary" }, "Resume with these fields"));
  }
  const raw = el("textarea", { id: `j-${uid}` }, json(payload));
  const jsonForm = el("form", { className: "resume-json", onsubmit: act(async () => {
    let value;
    try { value = JSON.parse(raw.value); } catch (err) { throw new Error(`The resume value is not JSON: ${err.message}`); }
    await resume(value);
  }) }, label("Resume value (JSON)", raw), el("div", { className: "actions" },
    el("button", { type: "submit", className: "primary" }, "Resume"),
    el("button", { type: "button", onclick: act(() => resume(true)) }, "Resume with true"),
    el("button", { type: "button", onclick: act(() => resume(false)) }, "Resume with false")));

  const edited = el("textarea", { id: `s-${uid}` }, json(state.values));
  const editForm = el("form", { className: "edit-state", onsubmit: act(async () => {
    const values = JSON.parse(edited.value);
    await api("POST", `/threads/${tid}/state`, { values });
    const created = await api("POST", `/threads/${tid}/runs`, { assistant_id: run.graph_name, input: null });
    await loadReview();
    flash(`State updated; run ${created.run_id} continues thread ${run.thread_id}.`);
  }) }, label("State values (JSON)", edited), el("button", { type: "submit" }, "Edit state and continue"));

  const forkBox = el("div", {}, el("button", { type: "button", onclick: act(async () => {
    const { items } = await allPages(ns(`/runs/${encodeURIComponent(run.run_id)}/checkpoints`), {}, "checkpoints");
    forkBox.replaceChildren(...items.map((cp) => el("details", {},
      el("summary", {}, `Step ${cp.step} (${cp.checkpoint_id})`), forkForm(run, cp, loadReview))));
  }) }, "Show checkpoints to fork from"));

  return el("article", { className: "card review", "data-run": run.run_id },
    el("header", {}, badge(run.status), el("strong", {}, run.graph_name),
      el("button", { type: "button", className: "link mono", onclick: () => openRun(run.run_id) }, run.run_id),
      el("span", { className: "muted" }, `thread ${run.thread_id}`),
      el("span", { className: "muted" }, `waiting since ${when(run.updated_at)}`)),
    el("h3", {}, "Asks"),
    el("pre", { className: "payload" }, interrupts.length ? json(payload) : "(no interrupt payload)"),
    el("div", { className: "operator-only" },
      form ? [el("h3", {}, "Resume with a form"), form] : null,
      el("h3", {}, "Resume with any value"), jsonForm,
      el("details", {}, el("summary", {}, "Edit the state and continue"), editForm),
      el("details", {}, el("summary", {}, "Fork from a checkpoint"), forkBox),
      el("div", { className: "actions" }, el("button", { type: "button", className: "danger",
        onclick: act(async () => {
          await api("POST", ns(`/runs/${encodeURIComponent(run.run_id)}/cancel`));
          await loadReview();
          flash(`Rejected: run ${run.run_id} cancelled.`);
        }) }, "Reject (cancel the run)"))));
}

// -- Threads -----------------------------------------------------------------------------

async function loadThreads() {
  const found = await api("POST", "/threads/search", { limit: 100 });
  $("thread-ids").replaceChildren(...found.map((t) => el("option", { value: t.thread_id })));
  const tid = $("thread-id").value.trim();
  if (tid) await showThread(tid);
  else $("thread-view").replaceChildren(el("p", { className: "muted" },
    `${found.length} recent threads: type or pick a thread id.`));
}

function openThread(tid) {
  $("thread-id").value = tid;
  selectTab("tab-threads");
}

async function showThread(tid) {
  const id = encodeURIComponent(tid);
  const [thread, runs, history] = await Promise.all([
    api("GET", `/threads/${id}`), api("GET", `/threads/${id}/runs?limit=100`),
    api("GET", `/threads/${id}/history?limit=100`)]);
  $("thread-view").replaceChildren(
    el("dl", { className: "kv" },
      el("dt", {}, "Thread"), el("dd", { className: "mono" }, thread.thread_id),
      el("dt", {}, "Status"), el("dd", {}, badge(thread.status)),
      el("dt", {}, "Created"), el("dd", {}, when(thread.created_at)),
      el("dt", {}, "Metadata"), el("dd", {}, el("pre", {}, json(thread.metadata)))),
    el("h3", {}, `Runs (${runs.length})`),
    el("table", { className: "grid thread-runs" },
      el("thead", {}, el("tr", {}, ["Run id", "Status", "Created", "Updated"].map((h) => el("th", {}, h)))),
      el("tbody", {}, runs.map((r) => el("tr", {},
        el("td", {}, el("button", { type: "button", className: "link mono", onclick: () => openRun(r.run_id) }, r.run_id)),
        el("td", {}, badge(r.status)), el("td", {}, when(r.created_at)), el("td", {}, when(r.updated_at)))))),
    el("h3", {}, `History (${history.length} checkpoints, newest first)`),
    el("div", { className: "cards history" }, history.map((s) => el("article", { className: "card" },
      el("header", {}, el("strong", {}, `Step ${s.metadata ? s.metadata.step : "?"}`),
        el("span", { className: "muted mono" }, s.checkpoint_id || (s.checkpoint && s.checkpoint.checkpoint_id)),
        el("span", { className: "muted" }, `next: ${(s.next || []).join(", ") || "(end)"}`),
        el("span", { className: "muted" }, when(s.created_at))),
      el("details", {}, el("summary", {}, "Values"), el("pre", {}, json(s.values)))))));
}

async function exportThread() {
  const tid = $("thread-id").value.trim();
  if (!tid) { flash("Type a thread id first.", true); return; }
  const data = await api("GET", `/threads/${encodeURIComponent(tid)}/export`);
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const link = el("a", { href: url, download: `thread-${tid}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  flash(`Exported thread ${tid}.`);
}

// -- wiring ------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("login-error").textContent = "";
    try {
      await signIn(key);
      $("tab-runs").focus(); // keyboard users go on from the first view, not the hidden form
    } catch (err) {
      $("login-error").textContent = err.status === 401 ? "That key is not valid." : err.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("ns-select").addEventListener("change", (e) => changeNamespace(e.target.value));
  $("ns-input").addEventListener("change", (e) => changeNamespace(e.target.value.trim()));
  for (const tab of tabs()) tab.addEventListener("click", () => selectTab(tab.id));
  $("tabs").addEventListener("keydown", tabKeys);
  $("run-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    runsView.pages = [];
    runsView.cursor = null;
    loadRuns().catch(failure);
  });
  $("runs-next").addEventListener("click", () => {
    runsView.pages.push(runsView.cursor);
    runsView.cursor = runsView.next;
    loadRuns().catch(failure);
  });
  $("runs-first").addEventListener("click", () => {
    runsView.pages = [];
    runsView.cursor = null;
    loadRuns().catch(failure);
  });
  $("select-all").addEventListener("change", (e) => {
    for (const box of $("runs-table").querySelectorAll("tbody input[type=checkbox]")) {
      box.checked = e.target.checked;
      if (e.target.checked) runsView.selected.add(box.dataset.run);
      else runsView.selected.delete(box.dataset.run);
    }
  });
  $("bulk-cancel").addEventListener("click", () => bulk("cancel").catch(failure));
  $("bulk-retry").addEventListener("click", () => bulk("retry").catch(failure));
  $("auto-refresh").addEventListener("change", (e) => autoRefresh(e.target.checked));
  $("states-refresh").addEventListener("click", () => loadStates().catch(failure));
  $("review-refresh").addEventListener("click", () => loadReview().catch(failure));
  $("thread-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showThread($("thread-id").value.trim()).catch(failure);
  });
  $("thread-export").addEventListener("click", () => exportThread().catch(failure));
  $("detail-back").addEventListener("click", () => selectTab(currentTab(), true));
  $("run-detail").addEventListener("keydown", (event) => { // Escape: back, unless typing
    if (event.key === "Escape" && !event.target.closest("input, textarea, select")) {
      event.preventDefault();
      $("detail-back").click();
    }
  });
  const key = sessionStorage.getItem(KEY);
  if (key) signIn(key).catch(() => signOut());
  else $("api-key").focus();
}

document.addEventListener("DOMContentLoaded", wire);

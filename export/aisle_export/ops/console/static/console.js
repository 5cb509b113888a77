// Aisle console: plain JavaScript over the console's JSON routes (aisle_export/ops/console/app.py).
// Everything from the server is put in the page as text (textContent), except a report's HTML,
// which the server renders from Markdown with raw HTML off.
"use strict";

const $ = (id) => document.getElementById(id);
let info = {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function showError(id, message) {
  const node = $(id);
  node.textContent = message || "";
  node.hidden = !message;
}

async function call(method, path, body, headers = {}) {
  const options = { method, headers: { ...headers } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
  if (!response.ok) {
    const field = data.field ? ` [${data.field}]` : "";
    throw new Error(`${data.error || "HTTP " + response.status}${field}`);
  }
  return data;
}

function request() {
  return {
    query: $("query").value,
    user_id: $("user-id").value,
    k: Number($("k").value || 10),
    surface: $("surface").value,
    segment: $("segment").value,
    rule_set: $("rule-set").value || "default",
  };
}

// -- explanations as bars ---------------------------------------------------------------------------
function explanation(row) {
  const box = el("div", { class: "explanation" });
  const biggest = Math.max(1e-12, ...row.bars.map((b) => Math.abs(b.value)));
  for (const bar of row.bars) {
    const half = (Math.abs(bar.value) / biggest) * 50;  // percent of the track; 0 is its middle
    const kind = bar.kind === "rules" ? "rules" : bar.value >= 0 ? "pos" : "neg";
    const left = bar.value >= 0 ? 50 : 50 - half;
    box.append(el("div", { class: "bar-row", "data-name": bar.name },
      el("span", { class: "bar-name" }, bar.name),
      el("div", { class: "bar-track" }, el("div", { class: `bar ${kind}`, style: `left:${left}%;width:${half}%` })),
      el("span", { class: "bar-value" }, bar.value.toFixed(4))));
  }
  if (!row.bars.length) box.append(el("span", { class: "muted" }, "no parts to show (every part is 0)"));
  if (row.pre_diversity_rank !== null && row.pre_diversity_rank !== undefined) {
    box.append(el("div", { class: "muted" }, `rank by score alone, before diversity: ${row.pre_diversity_rank + 1}`));
  }
  return box;
}

function effectChips(row) {
  return row.rule_effects.map((e) => el("span", { class: "effect", title: JSON.stringify(e) },
    `${e.rule}: ${e.effect}${e.delta !== undefined ? " " + Number(e.delta).toFixed(3) : ""}${e.position ? " @" + e.position : ""}`));
}

function renderResults(rows) {
  const list = $("results");
  list.replaceChildren();
  for (const row of rows) {
    const why = el("button", { class: "why", type: "button" }, "why?");
    const item = el("li", { class: "result", "data-item": row.item_id },
      el("div", { class: "result-head" }, el("span", { class: "item" }, row.item_id),
        el("span", { class: "title" }, row.title || ""),
        el("span", { class: "score" }, row.score.toFixed(4)), why, ...effectChips(row)));
    why.addEventListener("click", () => {
      const open = item.querySelector(".explanation");
      if (open) open.remove(); else item.append(explanation(row));
    });
    list.append(item);
  }
  if (!rows.length) list.append(el("li", { class: "muted" }, "no results"));
}

async function search(event) {
  event.preventDefault();
  showError("preview-error", "");
  try {
    const data = await call("POST", "/api/preview", request());
    renderResults(data.results);
  } catch (e) { showError("preview-error", e.message); $("results").replaceChildren(); }
}

// -- rules -----------------------------------------------------------------------------------------
function what(rule) {
  const keys = ["match", "action", "add", "multiply", "item", "position", "share", "max_exposures"];
  return keys.filter((k) => rule[k] !== undefined).map((k) => `${k}: ${rule[k]}`).join(", ");
}

// one rule per line: a set reads and edits as a list
const ruleSetText = (rules) => `{"rules": [\n${rules.map((r) => "  " + JSON.stringify(r)).join(",\n")}\n]}`;

async function loadRules() {
  showError("rules-error", "");
  const ruleSet = $("rule-set").value || "default";
  try {
    const data = await call("GET", `/api/rules?rule_set=${encodeURIComponent(ruleSet)}`);
    $("rules-version").textContent = `rule set "${data.rule_set}", version ${data.version}, ${data.rules.length} rule(s)`;
    $("rules-table").tBodies[0].replaceChildren(...data.rules.map((r) => el("tr", {},
      el("td", {}, r.id), el("td", {}, r.effect), el("td", {}, el("code", {}, r.when || "")), el("td", {}, el("code", {}, what(r))))));
    $("draft").value = ruleSetText(data.rules);
  } catch (e) { showError("rules-error", e.message); }
}

function renderPage(list, rows, moves) {
  list.replaceChildren(...rows.map((row, i) => {
    const item = el("li", { "data-item": row.item_id }, el("span", { class: "item" }, row.item_id),
      el("span", { class: "title" }, row.title || ""), ...effectChips(row));
    const move = moves && moves[i];
    if (move) {
      if (move.was === null) item.append(el("span", { class: "move new" }, "new"));
      else if (move.moved > 0) item.append(el("span", { class: "move up" }, `▲${move.moved}`));
      else if (move.moved < 0) item.append(el("span", { class: "move down" }, `▼${-move.moved}`));
    }
    return item;
  }));
}

async function dryRun() {
  showError("dry-run-error", "");
  try {
    const data = await call("POST", "/api/rules/dry-run", { ...request(), draft: $("draft").value });
    renderPage($("before"), data.before, null);
    renderPage($("after"), data.after, data.moves);
    $("left").textContent = data.left.length ? `left the page: ${data.left.join(", ")}` : (data.changed ? "" : "the page is the same");
    $("dry-run-result").hidden = false;
  } catch (e) { showError("dry-run-error", e.message); $("dry-run-result").hidden = true; }
}

async function change(path, body) {
  showError("dry-run-error", "");
  try {
    const data = await call("POST", path, body, { [info.token_header]: $("token").value });
    $("rules-status").textContent = `stored: ${JSON.stringify(data)}`;
    await loadRules();
  } catch (e) { showError("dry-run-error", e.message); }
}

// -- state: a shopper's events, live catalog changes -----------------------------------------------
const when = (seconds) => new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);

async function loadEvents(event) {
  event.preventDefault();
  showError("events-error", "");
  try {
    const user = $("events-user").value.trim();
    if (!user) throw new Error("user id: required [user_id]");
    const data = await call("GET", `/api/shoppers/${encodeURIComponent(user)}/events?n=20`);
    $("events-table").tBodies[0].replaceChildren(...data.events.map((e) => el("tr", {},
      el("td", {}, when(e.ts)), el("td", {}, e.event_type), el("td", {}, e.item_id))));
    if (!data.events.length) $("events-table").tBodies[0].append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no stored events")));
  } catch (e) { showError("events-error", e.message); }
}

async function loadChanges() {
  showError("changes-error", "");
  try {
    const data = await call("GET", "/api/catalog/changes?n=20");
    $("changes-table").tBodies[0].replaceChildren(...data.changes.map((c) => el("tr", {},
      el("td", {}, when(c.at)), el("td", {}, c.item_id), el("td", {}, c.op), el("td", {}, el("code", {}, JSON.stringify(c.fields))))));
    if (!data.changes.length) $("changes-table").tBodies[0].append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no live changes")));
  } catch (e) { showError("changes-error", e.message); }
}

// -- experiment reports ------------------------------------------------------------------------------
async function openReport(report) {
  showError("reports-error", "");
  try {
    const data = await call("GET", `/api/reports/html?path=${encodeURIComponent(report.path)}`);
    const article = $("report");
    article.innerHTML = data.html;  // rendered by markdown-it with raw HTML off
    for (const image of report.images) article.prepend(el("img", { src: `/reports/${image}`, alt: image }));
  } catch (e) { showError("reports-error", e.message); }
}

async function loadReports() {
  if (!info.reports) { showError("reports-error", "no reports directory: start the console with --reports DIR"); return; }
  try {
    const data = await call("GET", "/api/reports");
    $("reports-list").replaceChildren(...data.reports.map((r) => {
      const link = el("a", { "data-path": r.path }, `${r.title} (${r.path})`);
      link.addEventListener("click", () => openReport(r));
      return el("li", {}, link);
    }));
    if (data.reports.length) openReport(data.reports[0]);
  } catch (e) { showError("reports-error", e.message); }
}

async function start() {
  info = await call("GET", "/api/info");
  $("server").textContent = `serving ${info.url}` + (info.state ? ` · state ${info.state}` : "");
  $("mode").textContent = info.read_only ? "read-only" : "rule changes allowed (token)";
  $("mode").classList.toggle("rw", !info.read_only);
  for (const id of ["token", "set-rules", "rollback-rules"]) $(id).disabled = info.read_only;
  $("preview-form").addEventListener("submit", search);
  $("load-rules").addEventListener("click", loadRules);
  $("dry-run").addEventListener("click", dryRun);
  $("set-rules").addEventListener("click", () => change("/api/rules/set", { rule_set: $("rule-set").value || "default", rules: $("draft").value }));
  $("rollback-rules").addEventListener("click", () => change("/api/rules/rollback", { rule_set: $("rule-set").value || "default" }));
  $("events-form").addEventListener("submit", loadEvents);
  $("load-changes").addEventListener("click", loadChanges);
  document.body.dataset.ready = "1";
  loadReports();
}

start().catch((e) => { document.body.prepend(el("p", { class: "error" }, `console failed to start: ${e.message}`)); });

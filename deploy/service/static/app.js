// The operator page: the latest part's verdict in large, its picture, counters and trends from the
// inspection log, the history, feedback and model updates. No libraries, nothing from the network.
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEEP_CARDS = 8;          // cards kept on the page (the history table holds everything)
const PAGE_ROWS = 20;
const REFRESH_MS = 5000;       // counters, trend and drift when nobody uploads (the watched folder, other clients)
const LABELS = { normal: "OK", anomalous: "NG", error: "ERROR" };
const state = { models: {}, polling: null, offset: 0, total: 0, feedbackApi: true };

// --- talking to the service ----------------------------------------------------------------------------
class ServiceFailure extends Error {
  constructor(status, detail) { super(plainWords(status, detail)); this.status = status; }
}

// What the operator reads: what happened and what to do, no server wording.
function plainWords(status, detail) {
  const text = String(detail || "");
  if (status === 0) return "The inspection service cannot be reached. Check the network cable or ask maintenance.";
  if (status === 401) return "This needs the service token: type it in the Token field at the top.";
  if (status === 413) return "This image is too large to inspect.";
  if (status === 415) return "This file is not an image the inspection can read (use PNG, JPEG, BMP or TIFF).";
  if (status === 503) return "The inspection is busy. Try again in a moment.";
  if (status === 400 && /decode|empty upload|truncated|identify/i.test(text)) return "This file is damaged or not a complete image.";
  if (status === 409) return "Refused: " + text.replace(/\/[^\s'"]+/g, "…");
  if (status === 400) return "Not possible: " + text.replace(/\/[^\s'"]+/g, "…").replace(/--\w+/g, "a server setting");
  return "Something went wrong (code " + status + "). The inspection service logged it.";
}

function headers(mutating) {
  const h = {};
  if (mutating) h["X-PatchCore-Request"] = "page";
  const token = $("#token").value;
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, { method, body, headers: headers(method !== "GET") });
  } catch (e) {
    throw new ServiceFailure(0, "");
  }
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = {}; }
  if (!response.ok) throw new ServiceFailure(response.status, answer.error);
  return answer;
}

function jsonBody(value) { return new Blob([JSON.stringify(value)], { type: "application/json" }); }

function fileForm(file) {
  const form = new FormData();
  form.append("file", file);
  return form;
}

const modelPath = () => `/api/v1/models/${encodeURIComponent(currentModel())}`;
function currentModel() { return $("#model").value; }

function say(text, kind) {
  const message = $("#message");
  message.hidden = !text;
  message.textContent = text || "";
  message.className = kind || "error";
}

// --- models -------------------------------------------------------------------------------------------
function showModelInfo() {
  const m = state.models[currentModel()];
  if (!m) return;
  $("#model-info").textContent = `version ${m.version} · threshold ${m.thresholds.image.toFixed(3)}`;
  $("#model-info").title = `${m.method} ${m.arch}, created ${m.created}`;
  $("#model-info").dataset.version = m.version;
  $("#update").disabled = !m.updatable || (m.update && m.update.state === "running");
  $("#rollback").disabled = !m.has_previous;
  if (m.update) {
    showJob(m.update);
    if (m.update.state === "running") followUpdate(m.name);   // a tab opened during an update follows it
  }
}

async function loadModels() {
  const answer = await api("GET", "/api/v1/models");
  $("#token-field").hidden = !answer.token_required;
  const select = $("#model");
  const chosen = select.value || localStorage.getItem("patchcore-model");
  state.models = {};
  select.replaceChildren();
  for (const m of answer.models) {
    state.models[m.name] = m;
    select.add(new Option(m.name, m.name));
  }
  if (chosen in state.models) select.value = chosen;
  showModelInfo();
}

// --- the latest part -----------------------------------------------------------------------------------
function showVerdict(label, detail) {
  const banner = $("#banner");
  banner.className = "verdict " + label;
  $("#verdict-text").textContent = label;
  $("#verdict-detail").textContent = detail;
}

function showPicture(answer, why) {
  const picture = $("#picture");
  picture.classList.toggle("empty", !answer);
  $("#scale").hidden = !answer;
  $("#picture-empty").textContent = why || "No part scored yet";
  if (!answer) return;
  $("#layer-image").src = answer.image_png;
  $("#layer-heat").src = answer.heat_png;
  $("#layer-outline").src = answer.outline_png;
  // The defect region is outlined on NG parts only.
  $("#layer-outline").hidden = answer.decision !== "anomalous";
  $("#scale-bar").src = answer.scale_png;
}

function applyOpacity() {
  const value = Number($("#opacity").value);
  $("#layer-heat").style.opacity = String(value / 100);
  $("#opacity-value").textContent = value + "%";
  localStorage.setItem("patchcore-opacity", String(value));
}

function describeScore(answer) {
  const model = state.models[answer.model];
  const limit = model ? ` · NG from ${model.thresholds.image.toFixed(3)}` : "";
  return `score ${answer.image_score.toFixed(3)}${limit}`;
}

// --- cards ---------------------------------------------------------------------------------------------
function card(file) {
  const div = document.createElement("article");
  div.className = "card pending";
  div.dataset.name = file.name;
  const img = document.createElement("img");
  img.alt = "heat map of " + file.name;
  const head = document.createElement("div");
  const badge = document.createElement("span");
  badge.className = "badge pending";
  badge.textContent = "…";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = file.name;
  head.append(badge, " ", name);
  const scores = document.createElement("div");
  scores.className = "scores";
  const actions = document.createElement("div");
  actions.className = "actions";
  div.append(img, head, scores, actions);
  $("#cards").prepend(div);
  while ($("#cards").children.length > KEEP_CARDS) $("#cards").lastElementChild.remove();
  return div;
}

async function mark(file, label, div) {
  const badge = div.dataset.decision;
  if (label === "good" && badge === "NG" &&
      !window.confirm(`Mark ${file.name} as good?\n\nThe model was sure it is defective. After the next update it will accept parts that look like this one.`)) {
    return;
  }
  const note = document.createElement("div");
  try {
    const answer = await api("POST", `${modelPath()}/feedback?label=${label}`, fileForm(file));
    note.className = "marked";
    note.textContent = answer.replaced ? `now marked as ${label} (changed)` : `marked as ${label}`;
    loadFeedback();
    loadHistory();
  } catch (err) {
    note.className = "marked error";
    note.textContent = err.message;
  }
  div.querySelector(".actions").appendChild(note);
}

async function score(file) {
  const div = card(file);
  const model = currentModel();
  const badge = div.querySelector(".badge");
  let label = "ERROR";
  const partId = file.name.replace(/\.[^.]+$/, "");
  try {
    const answer = await api("POST", `/api/v1/models/${encodeURIComponent(model)}/predict?map=layers&part_id=${encodeURIComponent(partId)}`, fileForm(file));
    label = LABELS[answer.decision] || "ERROR";
    div.querySelector("img").src = answer.image_png;
    div.querySelector(".scores").textContent = `${describeScore(answer)} · version ${answer.version}`;
    for (const [kind, text] of [["good", "Mark as good"], ["defect", "Mark as defect"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = text;
      button.className = "mark-" + kind;
      button.addEventListener("click", () => mark(file, kind, div));
      div.querySelector(".actions").appendChild(button);
    }
    showVerdict(label, `${file.name} · ${describeScore(answer)} · ${new Date().toLocaleTimeString()}`);
    showPicture(answer);
  } catch (err) {
    div.querySelector(".scores").textContent = err.message;
    div.querySelector(".scores").classList.add("error");
    showVerdict("ERROR", `${file.name}: ${err.message}`);
    div.querySelector("img").hidden = true;
    showPicture(null, "No picture: the part was not inspected");
  }
  badge.className = "badge " + label;
  badge.textContent = label === "ERROR" ? "error" : label;
  div.className = "card " + label;
  div.dataset.decision = label === "ERROR" ? "error" : label;
}

// Every selection joins one queue: parts are scored one at a time in the order they came, so the banner
// always shows the last part given, even when a second selection arrives while the first is scored.
let scoring = Promise.resolve();
function scoreAll(files) {
  scoring = scoring.then(async () => {
    say("");
    for (const file of files) await score(file);
    await Promise.all([loadHistory(), loadStation()]);
  });
  return scoring;
}

// --- history from the log --------------------------------------------------------------------------------
const FILTERS = { OK: "normal", NG: "anomalous", error: "error" };

function historyQuery() {
  const params = new URLSearchParams({ model: currentModel() });
  const wanted = FILTERS[$("#filter").value];
  if (wanted) params.set("decision", wanted);
  return params;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

const fixed = (value, digits) => (value === null || value === undefined ? "" : Number(value).toFixed(digits));

async function loadHistory() {
  const params = historyQuery();
  $("#csv").href = "/api/v1/log.csv?" + params.toString();
  params.set("limit", String(PAGE_ROWS));
  params.set("offset", String(state.offset));
  let answer;
  try {
    answer = await api("GET", "/api/v1/log?" + params.toString());
  } catch (err) {
    $("#history-box").hidden = err.status === 404;   // the log is off
    return;
  }
  state.total = answer.total;
  const body = $("#table tbody");
  body.replaceChildren();
  for (const item of answer.items) {
    const row = document.createElement("tr");
    const label = LABELS[item.decision] || "ERROR";
    row.dataset.decision = label === "ERROR" ? "error" : label;
    cell(row, new Date(item.ts * 1000).toLocaleString());
    const verdict = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge " + label;
    badge.textContent = label;
    verdict.appendChild(badge);
    row.appendChild(verdict);
    cell(row, fixed(item.score, 3));
    cell(row, item.part_id || "");
    cell(row, item.source === "upload" ? "page" : item.source);
    cell(row, fixed(item.normalized, 2), "wide");
    cell(row, fixed(item.defect_area, 4), "wide");
    cell(row, item.version, "wide");
    cell(row, fixed(item.latency_ms, 0), "wide");
    cell(row, item.feedback || (item.error ? "not scored" : ""));
    body.appendChild(row);
  }
  const pages = Math.max(1, Math.ceil(state.total / PAGE_ROWS));
  $("#page-info").textContent = `page ${Math.floor(state.offset / PAGE_ROWS) + 1} of ${pages} · ${state.total} parts`;
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = state.offset + PAGE_ROWS >= state.total;
}

// --- counters, trend, drift -------------------------------------------------------------------------------
function svgElement(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

// One bar (or point) per minute of the last hour, the newest at the right.
function drawTrend(svg, trend, valueOf, kind, limit) {
  svg.replaceChildren();
  const now = Math.floor(Date.now() / 60000) * 60;
  const x = (ts) => 600 - (now - ts) / 60 * 10 - 10;
  const y = (v) => 115 - Math.max(0, Math.min(1, v)) * 110;
  svg.appendChild(svgElement("line", { x1: 0, x2: 600, y1: y(limit), y2: y(limit), class: "limit" }));
  svg.appendChild(svgElement("line", { x1: 0, x2: 600, y1: 115, y2: 115, class: "axis" }));
  const points = [];
  for (const minute of trend) {
    const value = valueOf(minute);
    if (value === null || value === undefined) continue;
    if (kind === "bars") {
      svg.appendChild(svgElement("rect", { x: x(minute.ts) + 1, y: y(value), width: 8, height: Math.max(1, 115 - y(value)),
        class: value >= limit ? "bar high" : "bar" }));
    } else {
      points.push(`${x(minute.ts) + 5},${y(value)}`);
    }
  }
  if (points.length) {
    svg.appendChild(svgElement("polyline", { points: points.join(" "), class: "line" }));
    for (const point of points) {
      const [cx, cy] = point.split(",");
      svg.appendChild(svgElement("circle", { cx, cy, r: 3, class: "dot" }));
    }
  }
}

function showDrift(drift) {
  const pill = $("#drift");
  if (!drift) { pill.hidden = true; return; }
  pill.hidden = false;
  pill.className = "pill " + drift.state;
  const text = { alarm: "DRIFT ALARM", learning: "Drift: learning", ok: "Drift: OK" }[drift.state];
  pill.textContent = text;
  const parts = [];
  if (drift.index !== null) parts.push(`drift index ${drift.index.toFixed(2)} (alarm at ${drift.limit})`);
  if (drift.ng_rate !== null) parts.push(`NG rate ${(100 * drift.ng_rate).toFixed(0)}% of the last ${drift.window} parts (alarm at ${(100 * drift.ng_rate_limit).toFixed(0)}%)`);
  if (drift.state === "learning") parts.push(`learning how this model's parts score: ${drift.parts_seen} of ${drift.window}`);
  if (drift.alarms.includes("score")) parts.unshift("Parts score higher than when this model started: check light, focus and the parts' supplier.");
  if (drift.alarms.includes("ng_rate")) parts.unshift("Too many parts are NG: check the line before going on.");
  $("#drift-detail").textContent = parts.join(" · ");
  $("#drift-detail").className = drift.state === "alarm" ? "alarm-text" : "muted";
}

async function loadStation() {
  const model = currentModel();
  if (!model) return;
  let answer;
  try {
    answer = await api("GET", `${modelPath()}/station?minutes=60`);
  } catch (err) {
    return;
  }
  showDrift(answer.drift);
  const s = answer.summary;
  if (!s) { $("#numbers").hidden = true; return; }
  $("#count-ok").textContent = s.ok;
  $("#count-ng").textContent = s.ng;
  $("#count-error").textContent = s.errors;
  $("#count-yield").textContent = s.yield === null ? "–" : s.yield >= 0.9995 ? "100%" : (100 * s.yield).toFixed(1) + "%";
  $("#count-rate").textContent = s.windows[0].parts_per_min.toFixed(1);
  drawTrend($("#trend-ng"), answer.trend, (m) => (m.parts - m.errors > 0 ? m.ng / (m.parts - m.errors) : null), "bars",
    answer.drift ? answer.drift.ng_rate_limit : 0.2);
  drawTrend($("#trend-score"), answer.trend, (m) => m.mean_normalized, "line", 0.5);
}

// --- feedback list (the images marked good / defect) -------------------------------------------------------
async function loadFeedback() {
  if (!state.feedbackApi || !currentModel()) return;
  let answer;
  try {
    answer = await api("GET", `${modelPath()}/feedback`);
  } catch (err) {
    if (err.status === 404 || err.status === 405) state.feedbackApi = false;   // a service without the list
    $("#feedback-box").hidden = true;
    return;
  }
  $("#feedback-box").hidden = false;
  const counts = answer.counts || {};
  $("#feedback-counts").textContent = `${counts.good || 0} marked good, ${counts.defect || 0} marked defect`;
  const list = $("#feedback-list");
  list.replaceChildren();
  for (const item of answer.items || []) {
    const li = document.createElement("li");
    li.dataset.sha256 = item.sha256;
    const text = document.createElement("span");
    text.textContent = `${item.label} · ${item.sha256.slice(0, 12)} · ${item.stored_at || ""}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.className = "remove";
    remove.addEventListener("click", async () => {
      try {
        await api("DELETE", `${modelPath()}/feedback/${encodeURIComponent(item.sha256)}`);
        loadFeedback();
      } catch (err) {
        say(err.message);
      }
    });
    li.append(text, remove);
    list.appendChild(li);
  }
}

// --- update and rollback -----------------------------------------------------------------------------
function showJob(job) {
  const running = job.state === "running";
  $("#update-progress").hidden = !running;
  $("#update-progress").value = job.progress;
  $("#update-steps").hidden = !running;
  let reached = true;
  for (const step of document.querySelectorAll("#update-steps li")) {
    const current = step.dataset.stage === job.stage;
    step.className = current ? "current" : reached ? "done" : "";
    if (current) reached = false;
  }
  if (!Array.from(document.querySelectorAll("#update-steps li")).some((li) => li.dataset.stage === job.stage)) {
    for (const step of document.querySelectorAll("#update-steps li")) step.className = "";
  }
  const words = { running: `Updating: ${job.stage} (${Math.round(100 * job.progress)}%)`, done: "Update finished",
    failed: "Update failed" }[job.state] || job.state;
  let text = words;
  if (job.before && job.before.version) text += ` · before ${job.before.version} (threshold ${job.before.thresholds.image.toFixed(4)})`;
  if (job.after && job.after.version) text += ` · after ${job.after.version} (threshold ${job.after.thresholds.image.toFixed(4)})`;
  if (job.state === "failed" && job.message) text += ": " + job.message.replace(/\/[^\s'"]+/g, "…");
  $("#update-status").textContent = text;
  $("#update-status").dataset.state = job.state;
  $("#update-status").className = job.state === "failed" ? "error" : "";
}

function followUpdate(model) {
  if (state.polling) return;
  state.polling = setInterval(async () => {
    try {
      const job = await api("GET", `/api/v1/models/${encodeURIComponent(model)}/update`);
      showJob(job);
      if (job.state !== "running") {
        clearInterval(state.polling);
        state.polling = null;
        await loadModels();
      }
    } catch (err) {
      $("#update-status").textContent = err.message;
      $("#update-status").className = "error";
    }
  }, 1000);
}

async function startUpdate() {
  const model = currentModel();
  try {
    showJob(await api("POST", `/api/v1/models/${encodeURIComponent(model)}/update`, jsonBody({})));
    $("#update").disabled = true;
    followUpdate(model);
  } catch (err) {
    $("#update-status").textContent = err.message;
    $("#update-status").className = "error";
    $("#update-status").dataset.state = "refused";
  }
}

async function rollback() {
  if (!window.confirm("Serve the previous model version again?")) return;
  try {
    const answer = await api("POST", `${modelPath()}/rollback`, jsonBody({}));
    $("#update-status").textContent = `Rolled back: now version ${answer.after.version} (was ${answer.before.version})`;
    $("#update-status").className = "";
    await loadModels();
  } catch (err) {
    $("#update-status").textContent = err.message;
    $("#update-status").className = "error";
  }
}

// --- wiring -------------------------------------------------------------------------------------------------
function refreshAll() {
  state.offset = 0;
  return Promise.all([loadHistory(), loadStation(), loadFeedback()]);
}

const drop = $("#drop");
drop.addEventListener("click", () => $("#files").click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#files").click(); }
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); scoreAll([...e.dataTransfer.files]); });
$("#files").addEventListener("change", (e) => { scoreAll([...e.target.files]); e.target.value = ""; });
$("#model").addEventListener("change", () => {
  localStorage.setItem("patchcore-model", currentModel());
  showModelInfo();
  refreshAll();
});
$("#filter").addEventListener("change", () => { state.offset = 0; loadHistory(); });
$("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_ROWS); loadHistory(); });
$("#next").addEventListener("click", () => { state.offset += PAGE_ROWS; loadHistory(); });
$("#opacity").addEventListener("input", applyOpacity);
$("#update").addEventListener("click", startUpdate);
$("#rollback").addEventListener("click", rollback);
$("#token").value = sessionStorage.getItem("patchcore-token") || "";
$("#token").addEventListener("change", () => sessionStorage.setItem("patchcore-token", $("#token").value));
$("#opacity").value = localStorage.getItem("patchcore-opacity") || "60";
applyOpacity();
loadModels()
  .then(refreshAll)
  .catch((err) => { $("#model-info").textContent = "No models: " + err.message; });
setInterval(() => { if (!document.hidden) loadStation(); }, REFRESH_MS);

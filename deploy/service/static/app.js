// The operator page: score dropped images, show heat maps and decisions, collect feedback, update the model.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { models: {}, tokenRequired: false, polling: null };

function authHeaders() {
  // The custom header marks the page's own requests: a page of another site cannot send it (deploy/service/security.py).
  const token = $("#token").value;
  const headers = { "X-PatchCore-Request": "page" };
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, body, headers: authHeaders() });
  let answer;
  try { answer = await response.json(); } catch (e) { answer = { error: response.statusText }; }
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function currentModel() { return $("#model").value; }

function showModelInfo() {
  const m = state.models[currentModel()];
  if (!m) return;
  $("#model-info").textContent =
    `version ${m.version} · ${m.method} ${m.arch} · image threshold ${m.thresholds.image.toFixed(4)} · created ${m.created}`;
  $("#model-info").dataset.version = m.version;
  $("#update").disabled = !m.updatable || (m.update && m.update.state === "running");
  $("#rollback").disabled = !m.has_previous;
  if (m.update) showJob(m.update);
}

async function loadModels() {
  const answer = await api("GET", "/api/v1/models");
  state.tokenRequired = answer.token_required;
  $("#token-field").hidden = !answer.token_required;
  const select = $("#model");
  const chosen = select.value;
  state.models = {};
  select.innerHTML = "";
  for (const m of answer.models) {
    state.models[m.name] = m;
    select.add(new Option(m.name, m.name));
  }
  if (chosen in state.models) select.value = chosen;
  showModelInfo();
}

function badgeFor(decision) {
  return decision === "anomalous" ? "NG" : decision === "normal" ? "OK" : "error";
}

function addRow(result) {
  const row = document.createElement("tr");
  const cells = [result.file, result.model, result.version || "", result.badge,
    result.image_score?.toFixed(4) ?? "", result.normalized_score?.toFixed(3) ?? "",
    result.defect_area?.toFixed(4) ?? "", result.latency_ms ?? ""];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.appendChild(cell);
  }
  row.dataset.decision = result.badge;
  $("#table tbody").appendChild(row);
  applyFilter();
}

function applyFilter() {
  const wanted = $("#filter").value;
  for (const row of document.querySelectorAll("#table tbody tr")) row.hidden = wanted && row.dataset.decision !== wanted;
}

function card(file) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.name = file.name;
  div.innerHTML = `<img alt="heat map"><div><span class="badge pending">…</span> <span class="scores"></span></div>
    <div class="name"></div><div class="actions"></div>`;
  div.querySelector(".name").textContent = file.name;
  $("#cards").prepend(div);
  return div;
}

const MARK_GOOD_NG = "Mark this NG image as good?\n\nThe next \"Update model\" adds it to the good images the model " +
  "learns from: this image and images like it will then pass as OK. The update is refused if the image is far " +
  "from the good ones (a blank frame, or a score far above the threshold).";

async function mark(file, label, div) {
  if (label === "good" && div.dataset.decision === "NG" && !window.confirm(MARK_GOOD_NG)) return;
  const form = new FormData();
  form.append("file", file);
  try {
    const answer = await api("POST", `/api/v1/models/${encodeURIComponent(currentModel())}/feedback?label=${label}`, form);
    const note = answer.replaced ? ` (was ${answer.previous_label})` : "";
    div.querySelector(".actions").insertAdjacentHTML("beforeend", `<div class="marked">marked as ${label}${note} (${answer.feedback.good} good in feedback)</div>`);
    await loadFeedback();
  } catch (err) {
    div.querySelector(".actions").insertAdjacentHTML("beforeend", `<div class="marked error"></div>`);
    div.querySelector(".marked.error").textContent = "feedback failed: " + err.message;
  }
}

async function score(file) {
  const div = card(file);
  const model = currentModel();
  const form = new FormData();
  form.append("file", file);
  const badge = div.querySelector(".badge");
  let result = { file: file.name, model };
  try {
    const answer = await api("POST", `/api/v1/models/${encodeURIComponent(model)}/predict?map=png`, form);
    Object.assign(result, answer, { badge: badgeFor(answer.decision) });
    div.querySelector("img").src = answer.map_png;
    div.querySelector(".scores").textContent =
      `score ${answer.image_score.toFixed(3)} · norm. ${answer.normalized_score.toFixed(2)} · ${answer.latency_ms} ms`;
    for (const [label, text] of [["good", "Mark as good"], ["defect", "Mark as defect"]]) {
      const button = document.createElement("button");
      button.textContent = text;
      button.className = "mark-" + label;
      button.onclick = () => mark(file, label, div);
      div.querySelector(".actions").appendChild(button);
    }
  } catch (err) {
    result.badge = "error";
    div.querySelector(".scores").textContent = err.message;
  }
  badge.className = "badge " + result.badge;
  badge.textContent = result.badge;
  div.dataset.decision = result.badge;
  addRow(result);
}

async function scoreAll(files) {
  for (const file of files) await score(file);   // in order, one at a time: the table follows the line
}

function showJob(job) {
  const progress = $("#update-progress");
  progress.hidden = job.state !== "running";
  progress.value = job.progress;
  let text = `${job.state}: ${job.stage}`;
  if (job.before && job.before.version) text += ` · before ${job.before.version} (threshold ${job.before.thresholds.image.toFixed(4)})`;
  if (job.after && job.after.version) text += ` · after ${job.after.version} (threshold ${job.after.thresholds.image.toFixed(4)})`;
  if (job.message) text += ` · ${job.message}`;
  $("#update-status").textContent = text;
  $("#update-status").dataset.state = job.state;
}

async function poll(model) {
  try {
    const job = await api("GET", `/api/v1/models/${encodeURIComponent(model)}/update`);
    showJob(job);
    if (job.state !== "running") {
      clearInterval(state.polling);
      state.polling = null;
      await loadModels();
      await loadFeedback();
    }
  } catch (err) {
    $("#update-status").textContent = err.message;
  }
}

async function startUpdate() {
  const model = currentModel();
  try {
    showJob(await api("POST", `/api/v1/models/${encodeURIComponent(model)}/update`));
    $("#update").disabled = true;
    if (!state.polling) state.polling = setInterval(() => poll(model), 1000);
  } catch (err) {
    $("#update-status").textContent = err.message;
    $("#update-status").dataset.state = "refused";
  }
}

async function loadFeedback() {
  const model = currentModel();
  if (!model) return;
  let answer;
  try { answer = await api("GET", `/api/v1/models/${encodeURIComponent(model)}/feedback`); } catch (err) { return; }
  const list = $("#feedback-list");
  list.innerHTML = "";
  for (const item of answer.items) {
    const li = document.createElement("li");
    li.dataset.sha256 = item.sha256;
    li.textContent = `${item.label} · ${item.sha256.slice(0, 12)} · ${item.stored_at}${item.in_model ? " · in the model" : ""} `;
    const button = document.createElement("button");
    button.textContent = "Delete";
    button.className = "delete-feedback";
    button.onclick = async () => {
      try { await api("DELETE", `/api/v1/models/${encodeURIComponent(model)}/feedback/${item.sha256}`); }
      catch (err) { $("#update-status").textContent = err.message; }
      await loadFeedback();
    };
    li.appendChild(button);
    list.appendChild(li);
  }
}

async function rollback() {
  try {
    const answer = await api("POST", `/api/v1/models/${encodeURIComponent(currentModel())}/rollback`);
    $("#update-status").textContent = `rolled back: ${answer.before.version} -> ${answer.after.version}`;
    await loadModels();
  } catch (err) {
    $("#update-status").textContent = err.message;
  }
}

const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); scoreAll([...e.dataTransfer.files]); });
$("#files").addEventListener("change", (e) => { scoreAll([...e.target.files]); e.target.value = ""; });
$("#model").addEventListener("change", () => { showModelInfo(); loadFeedback(); });
$("#filter").addEventListener("change", applyFilter);
$("#update").addEventListener("click", startUpdate);
$("#rollback").addEventListener("click", rollback);
$("#token").value = sessionStorage.getItem("patchcore-token") || "";
$("#token").addEventListener("change", () => sessionStorage.setItem("patchcore-token", $("#token").value));
loadModels().then(loadFeedback).catch((err) => { $("#model-info").textContent = "cannot list models: " + err.message; });

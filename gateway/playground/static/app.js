// The playground: calls this gateway's own /v1 endpoints with the key typed into the page.
"use strict";
const $ = (selector) => document.querySelector(selector);
const KEY = "gateway-key";
const message = $("#message");
const progress = $("#progress");
const results = $("#results");

function key() { return $("#key").value.trim(); }
function authorization() { return { Authorization: `Bearer ${key()}` }; }
function say(text) { message.textContent = text || ""; }
function working(text) { progress.textContent = text || ""; }

async function errorText(response) {
  // the gateway's JSON error, in either of its shapes
  try {
    const body = await response.json();
    return (body.error && body.error.message) || body.message || `HTTP ${response.status}`;
  } catch (error) {
    return `HTTP ${response.status}`;
  }
}

function modelOptions(served, health) {
  // `auto` first, then each model once, labelled with its other names; an operator's alias to a
  // model outside the catalog (an OpenRouter passthrough) is listed under its own name
  const aliases = health.aliases || {};
  // a gateway that is not ready answers /health with an error body, without default_model
  const options = [new Option(health.default_model ? `auto (${health.default_model})` : "auto", "")];
  for (const id of served.filter((name) => !(name in aliases) || !served.includes(aliases[name]))) {
    const others = served.filter((name) => aliases[name] === id);
    const target = aliases[id] ? ` → ${aliases[id]}` : "";
    options.push(new Option(others.length ? `${id} (${others.join(", ")})` : `${id}${target}`, id));
  }
  return options;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: authorization() });
  if (!response.ok) { say(await errorText(response)); $("#key-status").textContent = ""; return; }
  const served = (await response.json()).data.map((model) => model.id);
  const health = await (await fetch("/health")).json();
  for (const select of document.querySelectorAll("select.models")) {
    select.replaceChildren(...modelOptions(served, health));
  }
  $("#key-status").textContent = `${$("select.models").options.length - 1} models`;
  say("");
}

const money = (value) => `$${value.toFixed(2)}`;

function usageText(usage) {
  // GET /v1/usage's fields are null where the key has no limit
  if (usage.budget_usd === null) return `Spent ${money(usage.spent_usd)} · no budget`;
  const period = usage.budget_period ? ` per ${usage.budget_period}` : "";
  return `Spent ${money(usage.spent_usd)} of ${money(usage.budget_usd)}${period} · ${money(usage.remaining_usd)} left`;
}

async function loadUsage() {
  // GET /v1/usage: what this key has spent, and what is left of its budget
  const response = await fetch("/v1/usage", { headers: authorization() });
  const panel = $("#usage");
  if (response.status !== 200) { panel.hidden = true; return; }
  panel.textContent = usageText(await response.json());
  panel.hidden = false;
}

let typing;
$("#key").addEventListener("input", () => {
  // the typed key is used as it is: kept for the next visit, models and usage loaded once typing stops
  localStorage.setItem(KEY, key());
  clearTimeout(typing);
  typing = setTimeout(() => { if (key()) { loadModels(); loadUsage(); } }, 300);
});

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[role=tab]")) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    document.querySelector("main").classList.toggle("editing", tab.id === "tab-edit");  // results beside the source
  });
}

function figureFor(index) {
  let figure = results.querySelector(`figure[data-index="${index}"]`);
  if (!figure) {
    figure = document.createElement("figure");
    figure.dataset.index = index;
    figure.append(document.createElement("img"), document.createElement("figcaption"));
    results.append(figure);
  }
  return figure;
}

function show(data, kind) {
  // one image: a stream's event, or one item of a response body (its `url`, or its base64)
  const index = data.index || 0;
  const figure = figureFor(index);
  const img = figure.querySelector("img");
  const url = data.url || `data:image/${data.output_format};base64,${data.b64_json}`;
  img.src = url;
  img.alt = data.revised_prompt || "generated image";
  const caption = figure.querySelector("figcaption");
  if (kind === "partial_image") {
    figure.dataset.state = "partial";
    caption.textContent = `Drawing... (preview ${data.partial_image_index + 1})`;
    return;
  }
  figure.dataset.state = "done";
  const usage = data.usage;
  const cost = usage && usage.cost !== undefined ? ` · $${usage.cost.toFixed(4)}` : "";
  const spent = usage ? ` · ${usage.total_tokens || 0} tokens${cost}${data.usageOf || ""}` : "";
  caption.textContent = `${data.size}${spent}` + (data.revised_prompt ? ` · ${data.revised_prompt}` : "");
  const link = document.createElement("a");
  link.href = url;
  link.download = `image-${index + 1}.${data.output_format === "jpeg" ? "jpg" : data.output_format}`;
  link.textContent = " Download";
  caption.append(link);
}

function showBody(body) {
  // a synchronous response body (or a job's `result`): usage is summed over its images, so it is
  // shown once, on the first
  const many = body.data.length > 1 ? ` (all ${body.data.length} images)` : "";
  body.data.forEach((item, index) => show({ ...item, index, size: body.size, output_format: body.output_format,
    usage: index === 0 ? body.usage : undefined, usageOf: many }, "completed"));
}

class Refused extends Error {}  // the gateway's own error message

async function readJSON(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Refused(await errorText(response));
  return response.json();
}

async function send(url, init, { streamed, asJob }) {
  // One request: a stream of events, a plain JSON answer (URLs), or a job to poll. Every submit
  // button stays disabled until it ends (a job: until its final status), so one click is one request.
  const buttons = document.querySelectorAll("form button[type=submit]");
  for (const button of buttons) button.disabled = true;
  results.replaceChildren();
  $("#job").hidden = true;
  say("");
  working(asJob ? "" : "Working...");
  try {
    if (asJob) await runJob(url, init);
    else if (streamed) await readEvents(url, init);
    else showBody(await readJSON(url, init));
  } catch (error) {
    say(error instanceof Refused ? error.message : String(error));
  } finally {
    for (const button of buttons) button.disabled = false;
    working("");
    loadUsage();
  }
}

// --- jobs: `Prefer: respond-async`, then GET /v1/images/jobs/{id} every second until it ends ----
const FINAL = ["completed", "failed", "cancelled"];
const cancelButton = $("#cancel-job");
let wake = () => {};

function pause(ms) {
  // a second between polls, cut short by Cancel
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => { clearTimeout(timer); resolve(); };
  });
}

function showJob(job) {
  $("#job").hidden = false;
  $("#job-id").textContent = job.id;
  $("#job-status").textContent = job.status;
  cancelButton.hidden = FINAL.includes(job.status);
}

async function runJob(url, init) {
  const response = await fetch(url, { ...init, headers: { ...init.headers, Prefer: "respond-async" } });
  if (response.status !== 202) throw new Refused(await errorText(response));
  let job = await response.json();
  const path = `/v1/images/jobs/${encodeURIComponent(job.id)}`;
  let cancelled = null;  // DELETE's answer, once Cancel is pressed
  cancelButton.disabled = false;
  cancelButton.onclick = () => {
    cancelButton.disabled = true;
    cancelled = readJSON(path, { method: "DELETE", headers: authorization() });
    wake();
  };
  try {
    showJob(job);
    while (!FINAL.includes(job.status)) {
      if (!cancelled) await pause(1000);
      const answer = cancelled || readJSON(path, { headers: authorization() });
      const next = await answer;
      if (cancelled && answer !== cancelled) continue;  // Cancel was pressed during this poll: DELETE's answer wins
      job = next;
      showJob(job);
    }
  } finally {
    cancelButton.onclick = null;
    cancelButton.hidden = true;
  }
  if (job.status === "completed") showBody(job.result);
  if (job.status === "failed") say((job.error && job.error.error && job.error.error.message) ||
    (job.error && job.error.message) || "The job failed.");
}

async function readEvents(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) { say(await errorText(response)); return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const events = pending.split("\n\n");
    pending = events.pop();
    for (const block of events) {
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("");
      if (!data) continue;  // a keep-alive comment
      const event = JSON.parse(data);
      if (event.type === "error") { say(event.error.message); return; }
      show(event, event.type.endsWith("partial_image") ? "partial_image" : "completed");
    }
  }
}

function requestFields(form) {
  // the form's non-empty fields, with a typed model id winning over the list ("Run as a job" is
  // a header, not a field)
  const fields = new FormData(form);
  const typed = (fields.get("model_id") || "").trim();
  fields.delete("model_id");
  fields.delete("as_job");
  if (typed) fields.set("model", typed);
  return [...fields].filter(([, value]) => value !== "");
}

function mode(form) {
  // streamed (previews) unless URLs are asked for (`stream` with `url` is a 400) or it runs as a
  // job (a job cannot stream)
  const asJob = form.elements.as_job.checked;
  return { asJob, streamed: !asJob && form.elements.response_format.value !== "url" };
}

$("#generate").addEventListener("submit", (event) => {
  event.preventDefault();
  const how = mode(event.target);
  // the gateway sends previews only for models that draw them
  const body = how.streamed ? { stream: true, partial_images: 2 } : {};
  for (const [name, value] of requestFields(event.target)) body[name] = name === "n" ? Number(value) : value;
  send("/v1/images/generations", {
    method: "POST",
    headers: { ...authorization(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }, how);
});

// --- edits: pick or drop images, paint a mask over the first -------------------------------------
let files = [];
let painted = false;
const source = $("#source");
const mask = $("#mask");

async function useFiles(list) {
  files = [...list].filter((file) => file.type.startsWith("image/"));
  if (!files.length) return;
  const bitmap = await createImageBitmap(files[0]);
  for (const canvas of [source, mask]) { canvas.width = bitmap.width; canvas.height = bitmap.height; }
  source.getContext("2d").drawImage(bitmap, 0, 0);
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  painted = false;
  $("#mask-area").hidden = false;
}

$("#e-files").addEventListener("change", (event) => useFiles(event.target.files));
const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  useFiles(event.dataTransfer.files);
});

function paintAt(event) {
  const box = mask.getBoundingClientRect();
  const x = (event.clientX - box.left) * mask.width / box.width;
  const y = (event.clientY - box.top) * mask.height / box.height;
  const context = mask.getContext("2d");
  context.fillStyle = "rgba(255, 0, 0, 1)";
  context.beginPath();
  context.arc(x, y, Number($("#brush").value) * mask.width / box.width / 2, 0, 2 * Math.PI);
  context.fill();
  painted = true;
}
let painting = false;
mask.addEventListener("pointerdown", (event) => { painting = true; mask.setPointerCapture(event.pointerId); paintAt(event); });
mask.addEventListener("pointermove", (event) => { if (painting) paintAt(event); });
mask.addEventListener("pointerup", () => { painting = false; });
$("#clear-mask").addEventListener("click", () => {
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  painted = false;
});

function maskBlob() {
  // OpenAI's mask: the first image's size, opaque where it stays, transparent where painted
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  const context = out.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, out.width, out.height);
  context.globalCompositeOperation = "destination-out";
  context.drawImage(mask, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

$("#edit").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!files.length) { say("Add at least one image to edit."); return; }
  const form = new FormData();
  for (const file of files) form.append(files.length > 1 ? "image[]" : "image", file, file.name);
  if (painted) form.append("mask", await maskBlob(), "mask.png");
  for (const [name, value] of requestFields(event.target)) if (name !== "image") form.append(name, value);
  const how = mode(event.target);
  if (how.streamed) form.append("stream", "true");
  send("/v1/images/edits", { method: "POST", headers: authorization(), body: form }, how);
});

$("#key").value = localStorage.getItem(KEY) || "";
if (key()) { loadModels(); loadUsage(); }

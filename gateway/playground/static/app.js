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
  const index = data.index || 0;
  const figure = figureFor(index);
  const img = figure.querySelector("img");
  const url = `data:image/${data.output_format};base64,${data.b64_json}`;
  img.src = url;
  img.alt = data.revised_prompt || "generated image";
  const caption = figure.querySelector("figcaption");
  if (kind === "partial_image") {
    figure.dataset.state = "partial";
    caption.textContent = `Drawing... (preview ${data.partial_image_index + 1})`;
    return;
  }
  figure.dataset.state = "done";
  const usage = data.usage || {};
  const cost = usage.cost === undefined ? "" : ` · $${usage.cost.toFixed(4)}`;
  caption.textContent = `${data.size} · ${usage.total_tokens || 0} tokens${cost}` +
    (data.revised_prompt ? ` · ${data.revised_prompt}` : "");
  const link = document.createElement("a");
  link.href = url;
  link.download = `image-${index + 1}.${data.output_format === "jpeg" ? "jpg" : data.output_format}`;
  link.textContent = " Download";
  caption.append(link);
}

async function stream(form, url, init) {
  // POST with stream: true; server-sent events become figures as they come. The form's button
  // stays disabled until the request ends, so one click is one request.
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  results.replaceChildren();
  say("");
  working("Working...");
  try {
    await readEvents(url, init);
  } catch (error) {
    say(String(error));
  } finally {
    button.disabled = false;
    working("");
    loadUsage();
  }
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
  // the form's non-empty fields, with a typed model id winning over the list
  const fields = new FormData(form);
  const typed = (fields.get("model_id") || "").trim();
  fields.delete("model_id");
  if (typed) fields.set("model", typed);
  return [...fields].filter(([, value]) => value !== "");
}

$("#generate").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = { stream: true, partial_images: 2 };  // the gateway sends previews only for models that draw them
  for (const [name, value] of requestFields(event.target)) body[name] = name === "n" ? Number(value) : value;
  stream(event.target, "/v1/images/generations", {
    method: "POST",
    headers: { ...authorization(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
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
  form.append("stream", "true");
  stream(event.target, "/v1/images/edits", { method: "POST", headers: authorization(), body: form });
});

$("#key").value = localStorage.getItem(KEY) || "";
if (key()) { loadModels(); loadUsage(); }

// digitnet's page: draw on the canvas (pointer events: mouse, pen, touch), the prediction follows as you draw
// (debounced), and image files get a result row each. Everything goes through POST /api/predict.
"use strict";

const DEBOUNCE_MS = 250;
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
let drawing = false, last = null, timer = null, inFlight = 0, hasInk = false;

function resetPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return { x: (event.clientX - r.left) * pad.width / r.width, y: (event.clientY - r.top) * pad.height / r.height };
}

function stroke(from, to) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 18;  // about MNIST's stroke: 2 px in its 20 px box, the pad being 280 px
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  hasInk = true;
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true;
  last = point(e);
  stroke(last, last);
  pad.setPointerCapture(e.pointerId);
  e.preventDefault();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const p = point(e);
  stroke(last, p);
  last = p;
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (drawing) { drawing = false; schedule(); } });
}

document.getElementById("clear").addEventListener("click", () => {
  resetPad();
  showAnswer(null);
  statusLine.textContent = "Cleared. Draw a digit.";
});

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(predictPad, DEBOUNCE_MS);
}

async function post(files) {
  const form = new FormData();
  for (const [blob, name] of files) form.append("files", blob, name);
  const response = await fetch("/api/predict", { method: "POST", body: form });
  let body;
  try { body = await response.json(); } catch { body = { results: [], errors: [{ file: "", error: response.statusText }] }; }
  if (body.detail) body = { results: [], errors: [{ file: "", error: String(body.detail) }] };
  return body;
}

async function predictPad() {
  if (!hasInk) return;
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const ticket = ++inFlight;
  statusLine.textContent = "Reading…";
  try {
    const body = await post([[blob, "drawing.png"]]);
    if (ticket !== inFlight) return;  // a newer drawing has been sent since
    if (body.results.length) {
      showAnswer(body.results[0]);
      statusLine.textContent = "Keep drawing, or clear.";
    } else {
      showAnswer(null);
      statusLine.textContent = body.errors.length ? body.errors[0].error : "No answer.";
    }
  } catch (err) {
    statusLine.textContent = "The server did not answer: " + err;
  }
}

function showAnswer(result) {
  const digit = document.getElementById("digit");
  const preview = document.getElementById("preview");
  const bars = document.getElementById("bars");
  bars.replaceChildren();
  if (!result) {
    digit.textContent = "–";
    digit.dataset.digit = "";
    document.getElementById("probability").innerHTML = "&nbsp;";
    preview.removeAttribute("src");
    return;
  }
  digit.textContent = result.digit;
  digit.dataset.digit = result.digit;
  document.getElementById("probability").textContent =
    `probability ${(100 * result.probability).toFixed(1)}%` + (result.unsure ? " (unsure)" : "");
  preview.src = result.preview;
  result.probabilities.forEach((p, d) => {
    const bar = document.createElement("div");
    bar.className = "bar" + (d === result.digit ? " best" : "");
    bar.dataset.digit = d;
    bar.dataset.probability = p;
    bar.title = `${d}: ${(100 * p).toFixed(1)}%`;
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.height = `${Math.max(0.5, 100 * p)}%`;
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = d;
    bar.append(fill, label);
    bars.append(bar);
  });
}

// Files: chosen or dropped, many at once; one row per file, an error row for a bad one.
const choose = document.getElementById("choose");
const drop = document.getElementById("drop");
choose.addEventListener("change", () => predictFiles(choose.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); predictFiles(e.dataTransfer.files); });

async function predictFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  const tbody = document.querySelector("#results tbody");
  for (let i = 0; i < files.length; i += 32) {  // the server takes 32 files per request
    const batch = files.slice(i, i + 32);
    let body;
    try {
      body = await post(batch.map((f) => [f, f.name]));
    } catch (err) {
      body = { results: [], errors: batch.map((f) => ({ file: f.name, error: "the server did not answer" })) };
    }
    for (const r of body.results) {
      const row = tbody.insertRow();
      row.className = "ok";
      row.dataset.file = r.path;
      row.insertCell().textContent = r.path;
      const img = document.createElement("img");
      img.className = "thumb";
      img.width = 56; img.height = 56; img.src = r.preview; img.alt = "28x28 view";
      row.insertCell().append(img);
      row.insertCell().textContent = r.digit;
      row.insertCell().textContent = `${(100 * r.probability).toFixed(1)}%` + (r.unsure ? " (unsure)" : "");
    }
    for (const e of body.errors) {
      const row = tbody.insertRow();
      row.className = "error";
      row.dataset.file = e.file;
      row.insertCell().textContent = e.file;
      const cell = row.insertCell();
      cell.colSpan = 3;
      cell.textContent = e.error;
    }
  }
  choose.value = "";
}

async function showModel() {
  const line = document.getElementById("model");
  try {
    const m = await (await fetch("/api/model")).json();
    const acc = m.holdout_accuracy == null ? "holdout accuracy unknown" : `holdout accuracy ${(100 * m.holdout_accuracy).toFixed(2)}%`;
    line.textContent = `model: ${m.arch} (${m.parameters.toLocaleString()} parameters, ${m.scaling}), ${acc}`;
    line.dataset.arch = m.arch;
  } catch {
    line.textContent = "model: unknown (the server did not answer)";
  }
}

resetPad();
showModel();

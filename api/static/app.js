// The camera page: pick a model, send a photo (file or camera) to POST /predict/, draw the top-k bars.
"use strict";

const $ = (id) => document.getElementById(id);
let stream = null;
const rules = {};  // model name -> its "unknown" rule ({threshold, min_energy}), from GET /models

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModels() {
  try {
    const response = await fetch("/models");
    if (!response.ok) throw new Error(`GET /models answered ${response.status}`);
    const { models, rejected } = await response.json();
    for (const m of models) rules[m.name] = { threshold: m.threshold, minEnergy: m.min_energy };
    const select = $("model");
    select.replaceChildren(...models.map(
      (m) => new Option(`${m.name} (${m.num_classes} classes)`, m.name, m.default, m.default)));
    if (models.length === 0) {
      setStatus(`No model loaded: ${rejected.map((r) => r.reason).join("; ") || "the models folder is empty"}`, true);
    }
  } catch (err) {
    setStatus(`Cannot list the models: ${err.message}`, true);
  }
}

// "unknown" says why: the best guess fell under the model's threshold, or the photo is
// unlike the images the model learned from (its energy fell under the model's floor).
function whyUnknown(result) {
  const rule = rules[result.model] ?? { threshold: 0, minEnergy: null };
  if (result.confidence < rule.threshold)
    return `under this model's ${(100 * rule.threshold).toFixed(1)}% threshold`;
  return "unlike the images this model learned from";
}

function showBars(result) {
  const title = $("prediction");
  title.textContent = result.prediction;
  const unknown = result.prediction === "unknown";
  title.parentElement.classList.toggle("unknown", unknown);
  const asPercent = (p) => `${(100 * p).toFixed(1)}%`;
  $("confidence").textContent = unknown
    ? `best guess ${result.top_k[0].label} ${asPercent(result.confidence)}, ${whyUnknown(result)}`
    : asPercent(result.confidence);
  $("bars").replaceChildren(...result.top_k.map(({ label, probability }) => {
    const item = document.createElement("li");
    const name = document.createElement("div");
    name.className = "name";
    const labelText = document.createElement("span");
    labelText.textContent = label;
    const percent = document.createElement("span");
    percent.textContent = `${(100 * probability).toFixed(1)}%`;
    name.append(labelText, percent);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(100, 100 * probability))}%`;
    track.append(fill);
    item.append(name, track);
    return item;
  }));
}

async function classify(blob, filename) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  $("result").hidden = false;
  $("prediction").textContent = "…";
  $("confidence").textContent = "";
  $("bars").replaceChildren();
  setStatus("Classifying…");

  const form = new FormData();
  form.append("file", blob, filename);
  const model = $("model").value;
  const url = "/predict/?top_k=5" + (model ? `&model=${encodeURIComponent(model)}` : "");
  try {
    const response = await fetch(url, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `the server answered ${response.status}`);
    showBars(body);
    setStatus(`${filename} — model ${body.model}`);
    $("result").scrollIntoView({ behavior: "smooth", block: "nearest" });
    document.body.dataset.state = "done";
  } catch (err) {
    $("prediction").textContent = "";
    setStatus(`Could not classify ${filename}: ${err.message}`, true);
    document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) classify(file, file.name);
  event.target.value = "";  // choosing the same file again still fires "change"
});

async function openCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser gives no camera access here (it needs HTTPS or localhost).", true);
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (err) {
    setStatus(`No camera: ${err.message}`, true);
    return;
  }
  $("video").srcObject = stream;
  $("camera").hidden = false;
  $("camera-open").disabled = true;
  setStatus("Point the camera and take a photo.");
}

function closeCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("video").srcObject = null;
  $("camera").hidden = true;
  $("camera-open").disabled = false;
}

function takePhoto() {
  const video = $("video");
  if (!video.videoWidth) return;
  const canvas = $("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => blob && classify(blob, "camera.jpg"), "image/jpeg", 0.92);
}

$("camera-open").addEventListener("click", openCamera);
$("camera-close").addEventListener("click", closeCamera);
$("camera-shoot").addEventListener("click", takePhoto);
loadModels();

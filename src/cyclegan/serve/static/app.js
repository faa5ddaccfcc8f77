// cyclegan web app: pick or drop an image, send it to /api/translate, compare before and after.
// Plain browser JavaScript (no build step, no libraries) so the page works offline.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), file: $("file"), fileName: $("file-name"), limits: $("limits"),
    model: $("model"), direction: $("direction"), format: $("format"), maxSide: $("max-side"),
    modelInfo: $("model-info"), go: $("go"), error: $("error"), placeholder: $("placeholder"),
    stage: $("stage"), compare: $("compare"), before: $("before-image"), after: $("result-image"),
    handle: $("handle"), slider: $("slider"), tagBefore: $("tag-before"), tagAfter: $("tag-after"),
    busy: $("busy"), bar: $("progress-bar"), busyText: $("busy-text"), meta: $("result-meta"),
    download: $("download"),
  };
  const progress = els.bar.parentElement;
  const DIRECTION_LABELS = { a2b: "A → B", b2a: "B → A" };
  const MAX_RETRIES = 3;

  let models = [];
  let limits = null;
  let file = null;
  let beforeUrl = null;
  let afterUrl = null;
  let request = null; // the XMLHttpRequest in flight, if any
  let retryTimer = null;
  let elapsedTimer = null;

  // ------------------------------------------------------------------ helpers

  const formatBytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(n >= 10 << 20 ? 0 : 1)} MB`
    : `${Math.max(1, Math.round(n / 1024))} KB`);
  const formatPixels = (n) => `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)} megapixels`;

  function showError(title, detail) {
    els.error.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    els.error.append(strong);
    if (detail) els.error.append(document.createTextNode(detail));
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.replaceChildren();
  }

  function setBusy(text, percent) {
    els.busy.hidden = false;
    els.busyText.textContent = text;
    if (percent === null) {
      progress.classList.add("indeterminate");
      progress.removeAttribute("aria-valuenow");
      els.bar.style.width = "";
    } else {
      progress.classList.remove("indeterminate");
      progress.setAttribute("aria-valuenow", String(Math.round(percent)));
      els.bar.style.width = `${percent}%`;
    }
  }

  function stopTimers() {
    clearInterval(elapsedTimer);
    clearTimeout(retryTimer);
    elapsedTimer = retryTimer = null;
  }

  function endBusy() {
    stopTimers();
    els.busy.hidden = true;
    els.go.disabled = !file || !models.length;
  }

  // After a failure with nothing to show (no result, and a preview the browser could not draw),
  // bring the placeholder back instead of leaving an empty frame under the error.
  function resetStageIfEmpty() {
    if (els.after.hidden && els.compare.classList.contains("only-after")) {
      els.stage.hidden = true;
      els.placeholder.hidden = false;
    }
  }

  function setSlider(percent) {
    els.compare.style.setProperty("--pos", `${percent}%`);
  }

  function showCompare(on) {
    for (const el of [els.after, els.handle, els.slider, els.tagBefore, els.tagAfter]) el.hidden = !on;
    if (!on) els.download.hidden = true;
  }

  // ------------------------------------------------------------------ models

  function currentModel() {
    return models.find((m) => m.name === els.model.value);
  }

  function fillDirections() {
    const model = currentModel();
    const previous = els.direction.value;
    els.direction.replaceChildren();
    for (const d of model ? model.directions : []) {
      const option = new Option(`${DIRECTION_LABELS[d] || d}  (${d})`, d);
      els.direction.append(option);
    }
    if (model && model.directions.includes(previous)) els.direction.value = previous;
    els.direction.disabled = !model || model.directions.length < 2;
    describeModel(model);
  }

  function describeModel(model) {
    if (!model) {
      els.modelInfo.textContent = "";
      return;
    }
    const s = model.summary || {};
    const parts = [];
    if (model.image_size) parts.push(`trained on ${model.image_size} px crops`);
    if (s.generator) {
      let g = `${s.generator} generator`;
      if (s.n_blocks) g += `, ${s.n_blocks} blocks`;
      if (s.ngf) g += `, ngf ${s.ngf}`;
      parts.push(g);
    }
    if (s.preset) parts.push(`recipe “${s.preset}”`);
    const text = parts.length ? `${parts.join(" · ")}. ` : "";
    els.modelInfo.textContent = `${text.charAt(0).toUpperCase()}${text.slice(1)}The result keeps your image's size.`;
  }

  async function loadModels() {
    try {
      const response = await fetch("/api/models", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(await errorMessage(response));
      const body = await response.json();
      models = body.models || [];
      limits = body.limits || null;
    } catch (err) {
      els.model.replaceChildren(new Option("unavailable", ""));
      showError("Could not load the list of models.", ` ${err.message || err}. Is the server running?`);
      return;
    }
    els.model.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
    els.model.disabled = models.length < 2;
    fillDirections();
    if (limits) {
      els.limits.textContent = `${limits.accepted.map((f) => f.toUpperCase()).join(", ")} · up to `
        + `${formatBytes(limits.max_upload_bytes)} and ${formatPixels(limits.max_pixels)}`;
      els.maxSide.max = String(limits.max_side);
    }
    els.go.disabled = !file || !models.length;
  }

  // ------------------------------------------------------------------ choosing a file

  function chooseFile(chosen) {
    if (!chosen) return;
    clearError();
    if (limits && chosen.size > limits.max_upload_bytes) {
      showError("This file is too large.",
        ` It is ${formatBytes(chosen.size)}; the limit is ${formatBytes(limits.max_upload_bytes)}.`);
      return;
    }
    file = chosen;
    els.fileName.textContent = `${chosen.name} · ${formatBytes(chosen.size)}`;
    els.fileName.hidden = false;
    if (beforeUrl) URL.revokeObjectURL(beforeUrl);
    beforeUrl = URL.createObjectURL(chosen);
    els.compare.classList.remove("only-after");
    els.before.src = beforeUrl;
    els.placeholder.hidden = true;
    els.stage.hidden = false;
    showCompare(false);
    els.meta.textContent = "";
    translate();
  }

  // Browsers cannot show every format the server reads (TIFF, for one): then show the result alone.
  els.before.addEventListener("error", () => {
    if (!els.before.getAttribute("src")) return;
    els.compare.classList.add("only-after");
    if (!els.error.hidden && !request) resetStageIfEmpty();
  });

  els.file.addEventListener("change", () => {
    chooseFile(els.file.files[0]);
    els.file.value = ""; // choosing the same file again still fires "change"
  });

  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (event) => {
      event.preventDefault();
      els.drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend", "drop"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("dragging"));
  }
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const dropped = event.dataTransfer && event.dataTransfer.files[0];
    if (dropped) chooseFile(dropped);
    else showError("Nothing to use there.", " Drop an image file from your computer.");
  });
  // A file dropped beside the drop zone would otherwise make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files[0]) chooseFile(event.dataTransfer.files[0]);
  });

  // ------------------------------------------------------------------ translating

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  const TITLES = {
    404: "That model is not available.",
    413: "This image is too large.",
    415: "That file is not an image the server can read.",
    422: "The server could not use these settings.",
    500: "The translation failed on the server.",
    503: "The server is busy.",
  };

  function buildUrl() {
    const params = new URLSearchParams({
      model: els.model.value,
      direction: els.direction.value,
      format: els.format.value,
    });
    const side = parseInt(els.maxSide.value, 10);
    if (side > 0) params.set("max_side", String(side));
    return `/api/translate?${params}`;
  }

  function translate(attempt = 0) {
    if (!file || !models.length) return;
    if (request) request.abort();
    stopTimers();
    clearError();
    els.go.disabled = true;
    setBusy("Uploading…", 0);

    const form = new FormData();
    form.append("image", file, file.name);
    const xhr = new XMLHttpRequest();
    request = xhr;
    const started = performance.now();
    xhr.open("POST", buildUrl());
    xhr.responseType = "blob";

    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) setBusy(`Uploading… ${Math.round((100 * event.loaded) / event.total)}%`,
        (100 * event.loaded) / event.total);
    });
    xhr.upload.addEventListener("load", () => {
      const tick = () => setBusy(`Translating… ${((performance.now() - started) / 1000).toFixed(1)} s`, null);
      tick();
      elapsedTimer = setInterval(tick, 100);
    });
    xhr.addEventListener("error", () => {
      if (request !== xhr) return;
      request = null;
      endBusy();
      showError("Could not reach the server.", " Check that it is still running, then try again.");
      resetStageIfEmpty();
    });
    xhr.addEventListener("load", async () => {
      if (request !== xhr) return;
      request = null;
      if (xhr.status === 200) {
        endBusy();
        showResult(xhr.response, xhr, (performance.now() - started) / 1000);
        return;
      }
      const body = parseJson(await xhr.response.text());
      const message = (body && body.error) || `${xhr.status} ${xhr.statusText}`;
      const wait = parseInt(xhr.getResponseHeader("Retry-After") || "0", 10) || 2;
      if (xhr.status === 503 && attempt < MAX_RETRIES) {
        // Busy is temporary: wait as long as the server asks, then try again by ourselves.
        let left = wait;
        const countdown = () => setBusy(`The server is busy. Retrying in ${left} s…`, null);
        countdown();
        elapsedTimer = setInterval(() => { left = Math.max(0, left - 1); countdown(); }, 1000);
        retryTimer = setTimeout(() => translate(attempt + 1), wait * 1000);
        return;
      }
      endBusy();
      showError(TITLES[xhr.status] || `The server answered ${xhr.status}.`, ` ${message}`);
      resetStageIfEmpty();
    });
    xhr.send(form);
  }

  function showResult(blob, xhr, seconds) {
    if (afterUrl) URL.revokeObjectURL(afterUrl);
    afterUrl = URL.createObjectURL(blob);
    els.after.onload = () => {
      showCompare(true);
      setSlider(els.slider.value);
      const w = els.after.naturalWidth;
      const h = els.after.naturalHeight;
      els.meta.textContent = `${w} × ${h} px · ${formatBytes(blob.size)} · ${seconds.toFixed(1)} s`;
      els.download.hidden = false;
    };
    els.after.src = afterUrl;
    const ext = els.format.value;
    const stem = (file.name.replace(/\.[^.]+$/, "") || "image").replace(/[^\w.-]+/g, "_");
    els.download.href = afterUrl;
    els.download.download = `${stem}-${els.model.value}-${els.direction.value}.${ext}`;
    els.download.title = `Save as ${els.download.download}`;
  }

  els.slider.addEventListener("input", () => setSlider(els.slider.value));
  els.go.addEventListener("click", () => translate());
  els.model.addEventListener("change", () => {
    fillDirections();
    translate();
  });
  for (const el of [els.direction, els.format]) el.addEventListener("change", () => translate());
  els.maxSide.addEventListener("change", () => translate());

  setSlider(50);
  loadModels();
})();

// retina-seg viewer: send a photograph to this server's /invocations, paint the answer over it.
//
// Masks start as the server's own (at the model's validation thresholds); moving a class's threshold
// re-paints from the 16-bit probabilities of the same answer (pixel on when p16 / 65535 >= threshold),
// without a new request. Area, share of the field of view and (lesions) 8-connected regions are counted
// here the way contract.py counts them for the API's rows. Nothing is sent anywhere but this origin.
"use strict";

const KEY_STORE = "retina-seg-api-key"; // sessionStorage: the key lives as long as the tab
const NAMES = {
  vessels: "vessels", MA: "microaneurysms", HE: "haemorrhages", EX: "hard exudates",
  SE: "soft exudates", OD: "optic disc",
};
const MAX_ZOOM = 32;
const $ = (id) => document.getElementById(id);

const state = {
  info: null, // GET /model-info
  photo: null, // {name, stem, width, height, fovArea}
  classes: [], // {name, suffix, rgb, validation, threshold, visible, prob, serverMask, mask, area, regions, ui}
  view: { scale: 1, x: 0, y: 0, fit: 1 },
  painted: 0, // how many times the overlay was painted (the browser test waits on it)
  request: 0, // the latest photograph asked about: older answers are dropped
};

// ---- small helpers ----

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  $("error").textContent = text ? String(text).split("\n")[0] : "";
  if (text) setStatus("");
}

function suffixOf(name, classes) { return classes.length === 1 ? "" : `_${name}`; }

function rgbOf(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

function percent(share) {
  const value = share * 100;
  return `${value >= 10 ? value.toFixed(1) : value >= 0.1 ? value.toFixed(2) : value.toFixed(3)} %`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

class Refusal extends Error {}

// ---- the server: API key on demand ----

let keyRequest = null;

function askForKey(reason) {
  // one dialog at a time; resolves with the key, or null when cancelled (Escape, or Cancel)
  if (keyRequest) return keyRequest;
  keyRequest = new Promise((resolve) => {
    const dialog = $("key-dialog");
    const input = $("key");
    const before = document.activeElement;
    $("key-reason").textContent = reason || "";
    const page = [document.querySelector("header"), document.querySelector("main")];
    input.value = "";
    dialog.hidden = false;
    page.forEach((part) => { part.inert = true; }); // keyboard focus stays in the dialog
    input.focus();
    const close = (key) => {
      dialog.hidden = true;
      page.forEach((part) => { part.inert = false; });
      dialog.removeEventListener("keydown", onKey);
      $("key-ok").onclick = $("key-cancel").onclick = null;
      keyRequest = null;
      if (before) before.focus();
      resolve(key);
    };
    const onKey = (event) => {
      // Enter submits from the key's field only (on a button it presses that button); the default is
      // prevented, so that the keypress does not reach the control focus goes back to
      if (event.key === "Escape") {
        event.preventDefault();
        close(null);
      } else if (event.key === "Enter" && event.target === input) {
        event.preventDefault();
        if (input.value.trim()) close(input.value.trim());
      }
    };
    dialog.addEventListener("keydown", onKey);
    $("key-ok").onclick = () => input.value.trim() && close(input.value.trim());
    $("key-cancel").onclick = () => close(null);
  });
  return keyRequest;
}

async function api(path, options = {}) {
  // fetch on this origin; a 401/403 asks for the API key and tries it, as often as the user gives one. The key
  // is kept in sessionStorage once the server has taken it; a refused one is forgotten.
  let key = sessionStorage.getItem(KEY_STORE);
  for (;;) {
    const headers = { ...(options.headers || {}) };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "same-origin" });
    if (response.status !== 401 && response.status !== 403) {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      return response;
    }
    const answer = await response.json().catch(() => ({}));
    sessionStorage.removeItem(KEY_STORE);
    key = await askForKey(key ? answer.message || `the key was refused (HTTP ${response.status})` : "");
    if (!key) throw new Refusal("no API key was given: this server looks at a photograph only with one");
  }
}

// ---- PNG: the masks (8-bit) and probabilities (16-bit) of the answer are one-channel PNGs ----

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function deflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function bytesOf(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function decodePng(base64) {
  // one-channel, non-interlaced, 8 or 16 bits (what contract.py's encode_png writes) -> {width, height, pixels}
  const bytes = bytesOf(base64);
  const view = new DataView(bytes.buffer);
  let offset = 8;
  let width = 0, height = 0, depth = 0;
  const parts = [];
  while (offset < bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(offset + 8);
      height = view.getUint32(offset + 12);
      depth = data[8];
      if (data[9] !== 0 || data[12] !== 0 || (depth !== 8 && depth !== 16)) {
        throw new Error("the answer holds a PNG that is not one-channel 8 or 16-bit");
      }
    } else if (type === "IDAT") parts.push(data);
    else if (type === "IEND") break;
    offset += 12 + length;
  }
  const packed = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (packed.set(p, at), at + p.length), 0);
  const raw = await inflate(packed);
  const step = depth / 8; // bytes per pixel
  const stride = width * step;
  const out = new Uint8Array(height * stride);
  for (let y = 0, at = 0; y < height; y++) {
    const filter = raw[at++];
    const row = y * stride;
    for (let i = 0; i < stride; i++, at++) {
      const a = i >= step ? out[row + i - step] : 0;
      const b = y > 0 ? out[row + i - stride] : 0;
      const c = i >= step && y > 0 ? out[row + i - stride - step] : 0;
      let predictor = 0;
      if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[row + i] = raw[at] + predictor;
    }
  }
  if (depth === 8) return { width, height, pixels: out };
  const pixels = new Uint16Array(width * height);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (out[2 * i] << 8) | out[2 * i + 1];
  return { width, height, pixels };
}

const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set([...type].map((ch) => ch.charCodeAt(0)), 4);
  out.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) crc = CRC[(crc ^ out[i]) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return out;
}

async function encodeMaskPng(mask, width, height) {
  // a one-channel 8-bit PNG, 0/255, like the API's masks and predict's files
  const raw = new Uint8Array(height * (width + 1));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) raw[y * (width + 1) + 1 + x] = mask[y * width + x] ? 255 : 0;
  }
  const header = new Uint8Array(13);
  new DataView(header.buffer).setUint32(0, width);
  new DataView(header.buffer).setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8);
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, chunk("IHDR", header), chunk("IDAT", await deflate(raw)), chunk("IEND", new Uint8Array())],
    { type: "image/png" });
}

// ---- the figures ----

function countRegions(mask, width, height) {
  // 8-connected regions of a 0/1 mask: one pass with union-find over the already-labelled neighbours
  const labels = new Int32Array(width * height);
  const parent = [0];
  const find = (a) => {
    while (parent[a] !== a) a = parent[a] = parent[parent[a]];
    return a;
  };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      let label = 0;
      const neighbours = [x > 0 ? labels[i - 1] : 0, y > 0 && x > 0 ? labels[i - width - 1] : 0,
        y > 0 ? labels[i - width] : 0, y > 0 && x < width - 1 ? labels[i - width + 1] : 0];
      for (const n of neighbours) {
        if (!n) continue;
        if (!label) label = find(n);
        else {
          const root = find(n);
          if (root !== label) {
            parent[Math.max(root, label)] = Math.min(root, label);
            label = Math.min(root, label);
          }
        }
      }
      if (!label) {
        label = parent.length;
        parent.push(label);
      }
      labels[i] = label;
    }
  }
  let count = 0;
  for (let k = 1; k < parent.length; k++) if (find(k) === k) count++;
  return count;
}

const regionCounts = new Map(); // class -> pending timer: counting regions waits until a slider rests

function regionsOf(cls) {
  return state.info.lesions ? countRegions(cls.mask, state.photo.width, state.photo.height) : null;
}

function measure(cls, later = false) {
  let area = 0;
  for (let i = 0; i < cls.mask.length; i++) area += cls.mask[i];
  cls.area = area;
  clearTimeout(regionCounts.get(cls));
  cls.regions = later ? null : regionsOf(cls);
  if (later && state.info.lesions) {
    regionCounts.set(cls, setTimeout(() => {
      cls.regions = regionsOf(cls);
      showFigures(cls);
    }, 200));
  }
}

function share(cls) { return state.photo.fovArea ? cls.area / state.photo.fovArea : 0; }

function showFigures(cls) {
  const { ui } = cls;
  ui.area.textContent = `${cls.area.toLocaleString("en")} px`;
  ui.area.dataset.value = cls.area;
  ui.share.textContent = percent(share(cls));
  ui.share.dataset.value = share(cls);
  if (ui.regions && cls.regions === null) {
    ui.regions.textContent = "…";
    delete ui.regions.dataset.value;
  } else if (ui.regions) {
    ui.regions.textContent = cls.regions.toLocaleString("en");
    ui.regions.dataset.value = cls.regions;
  }
  const atValidation = cls.mask === cls.serverMask;
  ui.value.textContent = cls.threshold.toFixed(atValidation ? 3 : 2);
  ui.value.dataset.value = cls.threshold;
  ui.reset.disabled = atValidation;
}

// ---- painting ----

let overlayImage = null;
let paintPending = false;

function paint() {
  // every visible class in its colour, later classes on top (as reporting/lesion_figures.py paints)
  if (paintPending) return;
  paintPending = true;
  requestAnimationFrame(() => {
    paintPending = false;
    const data = overlayImage.data;
    data.fill(0);
    for (const cls of state.classes) {
      if (!cls.visible) continue;
      const [r, g, b] = cls.rgb;
      const mask = cls.mask;
      for (let i = 0, j = 0; i < mask.length; i++, j += 4) {
        if (mask[i]) {
          data[j] = r;
          data[j + 1] = g;
          data[j + 2] = b;
          data[j + 3] = 255;
        }
      }
    }
    $("overlay").getContext("2d").putImageData(overlayImage, 0, 0);
    state.painted += 1;
    document.body.dataset.painted = state.painted;
  });
}

function rethreshold(cls, threshold) {
  cls.threshold = threshold;
  const on = new Uint8Array(65536);
  for (let v = 0; v < 65536; v++) on[v] = v / state.info.probability_scale >= threshold ? 1 : 0;
  const prob = cls.prob;
  const mask = new Uint8Array(prob.length);
  for (let i = 0; i < mask.length; i++) mask[i] = on[prob[i]];
  cls.mask = mask;
  measure(cls, true);
  showFigures(cls);
  paint();
}

function resetThreshold(cls) {
  cls.threshold = cls.validation;
  cls.mask = cls.serverMask;
  cls.ui.slider.value = cls.validation;
  measure(cls, true);
  showFigures(cls);
  paint();
}

// ---- the class panel ----

function classCard(cls) {
  const id = `class-${cls.name}`;
  const toggle = element("input", { type: "checkbox", id: `show-${cls.name}` });
  toggle.checked = cls.visible;
  toggle.addEventListener("change", () => {
    cls.visible = toggle.checked;
    paint();
  });
  const swatch = element("span", { class: "swatch", "aria-hidden": "true" });
  swatch.style.background = `rgb(${cls.rgb.join(",")})`;
  const label = element("label", { for: toggle.id }, swatch, element("strong", { text: cls.name }),
    ` ${NAMES[cls.name] && NAMES[cls.name] !== cls.name ? NAMES[cls.name] : ""}`);
  const slider = element("input", {
    type: "range", id: `threshold-${cls.name}`, min: "0", max: "1", step: "0.01",
    "aria-label": `${cls.name} threshold`,
  });
  slider.value = cls.validation;
  slider.addEventListener("input", () => rethreshold(cls, parseFloat(slider.value)));
  const value = element("output", { id: `threshold-value-${cls.name}`, for: slider.id });
  const reset = element("button", {
    type: "button", class: "reset", id: `reset-${cls.name}`,
    title: `Back to the validation threshold ${cls.validation.toFixed(3)}`,
    "aria-label": `${cls.name}: back to the validation threshold`,
  }, "↺");
  reset.addEventListener("click", () => resetThreshold(cls));
  const download = element("button", { type: "button", id: `download-${cls.name}` }, "mask PNG");
  download.addEventListener("click", () => downloadMask(cls));
  const area = element("dd", { id: `area-${cls.name}` });
  const shareOut = element("dd", { id: `share-${cls.name}` });
  const figures = element("dl", {}, element("dt", { text: "area" }), area,
    element("dt", { text: "of the field of view" }), shareOut);
  let regions = null;
  if (state.info.lesions) {
    regions = element("dd", { id: `regions-${cls.name}` });
    figures.append(element("dt", { text: "regions" }), regions);
  }
  const card = element("section", { class: "class", id, "aria-label": cls.name },
    element("div", { class: "head" }, toggle, label, download),
    element("div", { class: "threshold" }, slider, value, reset),
    element("div", { class: "validation", text: `validation threshold ${cls.validation.toFixed(3)}` }),
    figures);
  cls.ui = { toggle, slider, value, reset, area, share: shareOut, regions };
  return card;
}

// ---- the view: zoom and pan on a full-resolution pair of canvases ----

function applyView() {
  const { scale, x, y } = state.view;
  $("layers").style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
  $("layers").classList.toggle("pixelated", scale >= 2);
  $("zoom").textContent = `${Math.round(scale * 100)} %`;
}

function fit() {
  if (!state.photo) return;
  const box = $("view").getBoundingClientRect();
  const scale = Math.min(box.width / state.photo.width, box.height / state.photo.height);
  state.view = { scale, fit: scale, x: (box.width - state.photo.width * scale) / 2,
    y: (box.height - state.photo.height * scale) / 2 };
  applyView();
}

function zoomAt(scale, cx, cy) {
  if (!state.photo) return;
  const view = state.view;
  const next = Math.min(MAX_ZOOM, Math.max(Math.min(1, view.fit) / 2, scale));
  view.x = cx - (cx - view.x) * (next / view.scale);
  view.y = cy - (cy - view.y) * (next / view.scale);
  view.scale = next;
  applyView();
}

function zoomBy(factor) {
  const box = $("view").getBoundingClientRect();
  zoomAt(state.view.scale * factor, box.width / 2, box.height / 2);
}

function pan(dx, dy) {
  state.view.x += dx;
  state.view.y += dy;
  applyView();
}

function pixelUnder(event) {
  if (!state.photo) return;
  const box = $("view").getBoundingClientRect();
  const x = Math.floor((event.clientX - box.left - state.view.x) / state.view.scale);
  const y = Math.floor((event.clientY - box.top - state.view.y) / state.view.scale);
  if (x < 0 || y < 0 || x >= state.photo.width || y >= state.photo.height) {
    $("pixel").textContent = "";
    return;
  }
  const i = y * state.photo.width + x;
  const probabilities = state.classes.map(
    (cls) => `${cls.name} ${(cls.prob[i] / state.info.probability_scale).toFixed(2)}`);
  $("pixel").textContent = `x ${x}, y ${y} · ${probabilities.join(" · ")}`;
}

function setUpView() {
  const view = $("view");
  let drag = null;
  view.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = view.getBoundingClientRect();
    zoomAt(state.view.scale * Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  view.addEventListener("pointerdown", (event) => {
    if (!state.photo || event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY };
    view.setPointerCapture(event.pointerId);
    view.classList.add("dragging");
  });
  view.addEventListener("pointermove", (event) => {
    if (drag) {
      pan(event.clientX - drag.x, event.clientY - drag.y);
      drag = { x: event.clientX, y: event.clientY };
    }
    pixelUnder(event);
  });
  const stop = () => {
    drag = null;
    view.classList.remove("dragging");
  };
  view.addEventListener("pointerup", stop);
  view.addEventListener("pointercancel", stop);
  view.addEventListener("dblclick", (event) => {
    const box = view.getBoundingClientRect();
    zoomAt(state.view.scale * 2, event.clientX - box.left, event.clientY - box.top);
  });
  view.addEventListener("keydown", (event) => {
    const step = 0.1 * Math.min(view.clientWidth, view.clientHeight);
    const keys = {
      "+": () => zoomBy(1.5), "=": () => zoomBy(1.5), "-": () => zoomBy(1 / 1.5), 0: fit,
      1: () => { const box = view.getBoundingClientRect(); zoomAt(1, box.width / 2, box.height / 2); },
      ArrowLeft: () => pan(step, 0), ArrowRight: () => pan(-step, 0),
      ArrowUp: () => pan(0, step), ArrowDown: () => pan(0, -step),
      o: () => $("show-overlay").click(),
    };
    if (keys[event.key] && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      keys[event.key]();
    }
  });
  $("zoom-in").addEventListener("click", () => zoomBy(1.5));
  $("zoom-out").addEventListener("click", () => zoomBy(1 / 1.5));
  $("fit").addEventListener("click", fit);
  $("actual").addEventListener("click", () => {
    const box = view.getBoundingClientRect();
    zoomAt(1, box.width / 2, box.height / 2);
  });
  new ResizeObserver(() => state.photo && fit()).observe(view);
}

// ---- a photograph in, the answer painted ----

function describe(name, message) {
  // the server's one-line reason about request row 0 reads as one about the file
  const line = String(message).split("\n")[0];
  const about = line.match(/^row 0: 'image' (.*)$/);
  return about ? `${name} ${about[1]}` : `${name}: ${line}`;
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
    reader.onerror = () => reject(new Refusal(`${file.name} could not be read`));
    reader.readAsDataURL(file);
  });
}

async function bitmapOf(blob) {
  // the pixels as stored (no colour-profile conversion), turned upright by EXIF as OpenCV does on the server
  return createImageBitmap(blob, { colorSpaceConversion: "none", imageOrientation: "from-image",
    premultiplyAlpha: "none" });
}

async function openPhotograph(file) {
  const request = ++state.request;
  showError("");
  document.body.dataset.state = "busy";
  try {
    const limit = state.info.max_image_mb;
    if (file.size > limit * 2 ** 20) {
      throw new Refusal(`${file.name} is a ${(file.size / 2 ** 20).toFixed(1)} MB file: the limit is ${limit} MB`);
    }
    setStatus(`Reading ${file.name}…`);
    // PNG and JPEG the browser shows itself; for a TIFF it cannot decode, the server sends back what it read
    const bitmap = await bitmapOf(file).catch(() => null);
    const body = JSON.stringify({
      dataframe_split: { columns: ["image"], data: [[await base64Of(file)]] },
      params: { return_probabilities: true, return_image: bitmap === null },
    });
    setStatus(`The model is looking at ${file.name}…`);
    const response = await api("/invocations", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Refusal(describe(file.name, answer.message || `HTTP ${response.status}`));
    if (request !== state.request) return;
    const row = answer.predictions[0];
    const picture = bitmap || await bitmapOf(new Blob([bytesOf(row.image)], { type: "image/png" }));
    if (picture.width !== row.width || picture.height !== row.height) {
      throw new Refusal(`${file.name}: the browser reads it as ${picture.width}x${picture.height} but the server as ` +
        `${row.width}x${row.height}`);
    }
    await show(file, picture, row);
    if (request !== state.request) return;
    setStatus(`${file.name}: ${row.width}x${row.height} px`);
    document.body.dataset.state = "ready";
  } catch (error) {
    if (request !== state.request) return;
    showError(error instanceof Refusal ? error.message : `${file.name}: ${error.message || error}`);
    document.body.dataset.state = "refused";
  }
}

async function show(file, picture, row) {
  const { width, height } = row;
  const names = state.info.classes;
  const classes = [];
  for (const name of names) {
    const suffix = suffixOf(name, names);
    const [mask, prob] = await Promise.all([decodePng(row[`mask${suffix}`]), decodePng(row[`probabilities${suffix}`])]);
    const serverMask = mask.pixels.map((v) => (v ? 1 : 0));
    const validation = state.info.thresholds[name];
    classes.push({ name, suffix, rgb: rgbOf(state.info.colours[name]), validation, threshold: validation,
      visible: true, prob: prob.pixels, serverMask, mask: serverMask });
  }
  state.photo = { name: file.name, stem: file.name.split(".")[0], width, height, fovArea: row.fov_area };
  state.classes = classes;
  for (const canvas of [$("photo"), $("overlay")]) {
    canvas.width = width;
    canvas.height = height;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  const photo = $("photo").getContext("2d");
  photo.fillStyle = "#000";
  photo.fillRect(0, 0, width, height);
  photo.drawImage(picture, 0, 0);
  overlayImage = new ImageData(width, height);
  $("classes").replaceChildren(...classes.map(classCard));
  for (const cls of classes) {
    measure(cls);
    showFigures(cls);
  }
  $("fov").textContent = `field of view: ${row.fov_area.toLocaleString("en")} px`;
  $("drop").hidden = true;
  $("layers").hidden = false;
  $("download-masks").disabled = $("download-csv").disabled = false;
  fit();
  paint();
}

// ---- downloads ----

function save(blob, name) {
  const link = element("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function downloadMask(cls) {
  save(await encodeMaskPng(cls.mask, state.photo.width, state.photo.height), `${state.photo.stem}_mask${cls.suffix}.png`);
}

function figuresCsv() {
  const header = ["image", "class", "threshold", "validation_threshold", "area_px", "fov_area_px", "fov_share", "regions"];
  const quote = (value) => (/[",\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value);
  for (const cls of state.classes) {
    if (state.info.lesions && cls.regions === null) cls.regions = regionsOf(cls); // a slider has just moved
  }
  const rows = state.classes.map((cls) => [state.photo.name, cls.name, cls.threshold, cls.validation, cls.area,
    state.photo.fovArea, share(cls), cls.regions ?? ""].map((v) => quote(String(v))).join(","));
  return [header.join(","), ...rows].join("\n") + "\n";
}

// ---- start ----

function describeModel(info) {
  const parts = [];
  if (info.name) parts.push(["model", info.version ? `${info.name} version ${info.version}` : info.name]);
  if (info.run_id) parts.push(["run", info.run_id]);
  if (!info.name && !info.run_id) parts.push(["model", info.source]);
  parts.push(["classes", info.classes.join(", ")], ["precision", info.precision]);
  $("model").replaceChildren(...parts.flatMap(([label, value], k) =>
    [k ? " · " : "", `${label} `, element("strong", { text: value })]));
  $("model").title = info.source;
  if (info.model_card) $("model-card").href = info.model_card;
  $("model-card").hidden = !info.model_card;
}

async function start() {
  setUpView();
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = ""; // so that choosing the same file again opens it again
    if (file && state.info) openPhotograph(file);
  });
  const view = $("view");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      view.classList.add("over");
    });
  }
  document.addEventListener("dragleave", (event) => event.relatedTarget || view.classList.remove("over"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    view.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file && state.info) openPhotograph(file);
  });
  $("opacity").addEventListener("input", () => {
    $("overlay").style.opacity = $("opacity").value;
    $("opacity-value").textContent = `${Math.round($("opacity").value * 100)} %`;
  });
  $("overlay").style.opacity = $("opacity").value;
  $("show-overlay").addEventListener("change", () => {
    $("overlay").hidden = !$("show-overlay").checked;
  });
  $("download-masks").addEventListener("click", async () => {
    for (const cls of state.classes) await downloadMask(cls);
  });
  $("download-csv").addEventListener("click", () =>
    save(new Blob([figuresCsv()], { type: "text/csv" }), `${state.photo.stem}_figures.csv`));
  try {
    const response = await api("/model-info");
    if (!response.ok) throw new Refusal(`the model's description is unavailable (HTTP ${response.status})`);
    state.info = await response.json();
    describeModel(state.info);
    setStatus("Open or drop a photograph.");
    document.body.dataset.state = "idle";
  } catch (error) {
    $("model").textContent = "";
    showError(error.message || String(error));
    document.body.dataset.state = "refused";
  }
}

start();

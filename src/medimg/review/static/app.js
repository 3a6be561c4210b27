// medimg review page: a small canvas viewer and label editor (plain JS, no dependencies).
// The server sends each slice already oriented for the screen (rows top to bottom, columns
// left to right), so a canvas pixel maps to one voxel of the shown slice by scaling alone.
"use strict";

const TOKEN = document.querySelector('meta[name="medimg-token"]').content;
const PRESETS = { // [level, width] in Hounsfield units
  "ct-soft": [40, 400], "ct-lung": [-600, 1500], "ct-bone": [400, 1800], "ct-brain": [40, 80],
};
const MAX_SIZE = 640; // longest canvas side in CSS pixels
const $ = (id) => document.getElementById(id);

const state = {
  case: null, info: null, axis: 2, index: 0,
  image: null, labels: null, unc: null, // current display slices {data, rows, cols}
  edits: new Map(), // "axis:index" -> Uint8Array of the edited display slice
  undo: [], // {key, before: Uint8Array, had: bool}
  colours: {}, drawing: false, last: null, cache: new Map(),
};
window.medimgReview = state; // for tests and benchmarks

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Medimg-Token": TOKEN }, options.headers || {});
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (!res.ok) {
    let text = res.statusText;
    try { text = (await res.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return res;
}

function message(text, error = false) {
  $("msg").textContent = text;
  $("msg").className = error ? "error" : "";
}

async function fetchSlice(layer, axis, index) {
  const key = `${state.case}:${layer}:${axis}:${index}`;
  if (state.cache.has(key)) return state.cache.get(key);
  const q = `layer=${layer}&axis=${axis}&index=${index}`;
  const res = await api(`api/cases/${encodeURIComponent(state.case)}/slice?${q}`);
  const [rows, cols] = res.headers.get("X-Shape").split(",").map(Number);
  const buf = await res.arrayBuffer();
  const data = res.headers.get("X-Dtype") === "uint8" ? new Uint8Array(buf) : new Float32Array(buf);
  const out = { data, rows, cols };
  state.cache.set(key, out);
  if (state.cache.size > 96) state.cache.delete(state.cache.keys().next().value);
  return out;
}

function hexColour(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function windowRange() {
  const preset = $("window").value;
  if (PRESETS[preset]) {
    const [l, w] = PRESETS[preset];
    return [l - w / 2, l + w / 2];
  }
  return state.info.range;
}

function sliceKey() { return `${state.axis}:${state.index}`; }

function currentLabels() {
  return state.edits.get(sliceKey()) || state.labels.data;
}

function draw() {
  const { rows, cols } = state.image;
  const [lo, hi] = windowRange();
  const scale = 255 / Math.max(hi - lo, 1e-6);
  const alpha = Number($("opacity").value) / 100;
  const labels = currentLabels();
  const img = state.image.data;
  const unc = $("uncertainty").checked && state.unc ? state.unc.data : null;
  const pixels = new ImageData(cols, rows);
  const px = pixels.data;
  for (let i = 0, p = 0; i < img.length; i++, p += 4) {
    let g = (img[i] - lo) * scale;
    g = g < 0 ? 0 : g > 255 ? 255 : g;
    let r = g, gr = g, b = g;
    const lab = labels[i];
    if (lab && state.colours[lab]) {
      const c = state.colours[lab];
      r = r * (1 - alpha) + c[0] * alpha; gr = gr * (1 - alpha) + c[1] * alpha; b = b * (1 - alpha) + c[2] * alpha;
    }
    if (unc) { // uncertainty as a yellow-to-red heat over the image
      const u = Math.min(Math.max(unc[i], 0), 1) * 0.8;
      r = r * (1 - u) + 255 * u; gr = gr * (1 - u) + 200 * (1 - unc[i]) * u; b = b * (1 - u);
    }
    px[p] = r; px[p + 1] = gr; px[p + 2] = b; px[p + 3] = 255;
  }
  const off = new OffscreenCanvas(cols, rows);
  off.getContext("2d").putImageData(pixels, 0, 0);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  canvas.dataset.slice = sliceKey();
  canvas.dataset.case = state.case;
  canvas.dataset.uncertainty = unc ? "1" : "0";
  $("edits").textContent = state.edits.size ? `${state.edits.size} slice(s) edited, unsaved` : "";
}

function fitCanvas() {
  const sp = state.info.spacing;
  const other = [0, 1, 2].filter((a) => a !== state.axis); // (u, v): columns, rows
  const shape = state.info.shape;
  const w = shape[other[0]] * sp[other[0]], h = shape[other[1]] * sp[other[1]];
  const s = MAX_SIZE / Math.max(w, h);
  const canvas = $("canvas");
  canvas.width = Math.max(1, Math.round(w * s));
  canvas.height = Math.max(1, Math.round(h * s));
}

async function showSlice(index) {
  const n = state.info.shape[state.axis];
  state.index = Math.min(Math.max(index, 0), n - 1);
  $("slice").value = state.index;
  $("sliceno").textContent = `${state.index + 1} / ${n}`;
  const want = [state.case, state.axis, state.index].join(":");
  const layers = [fetchSlice("image", state.axis, state.index), fetchSlice("labels", state.axis, state.index)];
  if (state.info.has_uncertainty && $("uncertainty").checked) {
    layers.push(fetchSlice("uncertainty", state.axis, state.index)); // read only when shown
  }
  const [image, labels, unc] = await Promise.all(layers);
  if (want !== [state.case, state.axis, state.index].join(":")) return; // a later request won
  Object.assign(state, { image, labels, unc: unc || null });
  draw();
}

async function setAxis(axis) {
  state.axis = axis;
  $("slice").max = state.info.shape[axis] - 1;
  fitCanvas();
  await showSlice(Math.floor(state.info.shape[axis] / 2));
}

async function openCase(name) {
  if (state.edits.size && !window.confirm("Discard the unsaved edits of this case?")) return;
  state.case = name;
  state.edits.clear(); state.undo = []; state.cache.clear();
  const info = await (await api(`api/cases/${encodeURIComponent(name)}`)).json();
  state.info = info;
  $("title").textContent = `${name}` + (info.queue.rank ? ` (queue #${info.queue.rank}, uncertainty ${info.queue.score.toFixed(3)})` : "");
  state.colours = {};
  const select = $("label");
  select.innerHTML = "";
  for (const [value, { name: lname, color }] of Object.entries(info.labels)) {
    state.colours[value] = hexColour(color);
    if (Number(value) === 0) continue;
    const opt = document.createElement("option");
    opt.value = value; opt.textContent = `${value}: ${lname}`;
    select.appendChild(opt);
  }
  $("uncertainty").disabled = !info.has_uncertainty;
  $("status").value = info.record ? info.record.status : "pending";
  $("note").value = info.record ? info.record.note : "";
  for (const li of document.querySelectorAll("#cases li")) li.classList.toggle("current", li.dataset.case === name);
  await setAxis(state.axis);
}

async function listCases() {
  const { cases } = await (await api("api/cases")).json();
  const list = $("cases");
  list.innerHTML = "";
  for (const c of cases) {
    const li = document.createElement("li");
    li.dataset.case = c.case;
    li.textContent = c.case;
    if (c.queue.score !== undefined && c.queue.score !== null) {
      const s = document.createElement("span");
      s.className = "score"; s.textContent = ` ${c.queue.score.toFixed(3)}`;
      li.appendChild(s);
    }
    if (c.status) {
      const s = document.createElement("span");
      s.className = "status"; s.textContent = `[${c.status}]`;
      li.appendChild(s);
    }
    li.addEventListener("click", () => openCase(c.case).catch((e) => message(e.message, true)));
    list.appendChild(li);
  }
  return cases;
}

// ---------------------------------------------------------------- editing
function voxelAt(event) {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) / rect.width, y = (event.clientY - rect.top) / rect.height;
  return [y * state.image.rows, x * state.image.cols]; // fractional (row, col)
}

function paint(r, c) {
  const radius = Number($("size").value) - 1;
  const value = $("tool").value === "eraser" ? 0 : Number($("label").value);
  const { rows, cols } = state.image;
  const lab = state.edits.get(sliceKey());
  const r0 = Math.floor(r), c0 = Math.floor(c);
  for (let dr = -radius; dr <= radius; dr++) {
    for (let dc = -radius; dc <= radius; dc++) {
      if (dr * dr + dc * dc > radius * radius) continue;
      const rr = r0 + dr, cc = c0 + dc;
      if (rr >= 0 && rr < rows && cc >= 0 && cc < cols) lab[rr * cols + cc] = value;
    }
  }
}

function strokeTo(point) {
  const [r1, c1] = point;
  const [r0, c0] = state.last || point;
  const steps = Math.max(1, Math.ceil(2 * Math.hypot(r1 - r0, c1 - c0)));
  for (let s = 0; s <= steps; s++) paint(r0 + ((r1 - r0) * s) / steps, c0 + ((c1 - c0) * s) / steps);
  state.last = point;
  draw();
}

function fill(r, c) {
  // 4-connected flood fill of the clicked region (voxels of the clicked label) on this slice
  const { rows, cols } = state.image;
  const lab = state.edits.get(sliceKey());
  const start = Math.floor(r) * cols + Math.floor(c);
  const from = lab[start], value = Number($("label").value);
  if (from === value) return;
  const stack = [start];
  while (stack.length) {
    const i = stack.pop();
    if (lab[i] !== from) continue;
    lab[i] = value;
    const rr = Math.floor(i / cols), cc = i % cols;
    if (rr > 0) stack.push(i - cols);
    if (rr < rows - 1) stack.push(i + cols);
    if (cc > 0) stack.push(i - 1);
    if (cc < cols - 1) stack.push(i + 1);
  }
}

function startStroke(event) {
  if (!state.image || event.button !== 0) return;
  const key = sliceKey();
  const had = state.edits.has(key);
  const before = Uint8Array.from(currentLabels());
  state.undo.push({ key, before, had });
  if (!had) state.edits.set(key, Uint8Array.from(before));
  if ($("tool").value === "fill") {
    const [r, c] = voxelAt(event);
    fill(r, c);
    draw();
    return;
  }
  state.drawing = true; state.last = null;
  strokeTo(voxelAt(event));
}

function undo() {
  const step = state.undo.pop();
  if (!step) return;
  if (step.had) state.edits.set(step.key, step.before); else state.edits.delete(step.key);
  const [axis, index] = step.key.split(":").map(Number);
  if (axis === state.axis && index === state.index) draw(); else { state.axis = axis; $("view").value = axis; setAxis(axis).then(() => showSlice(index)); }
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function save() {
  const edits = [...state.edits].map(([key, data]) => {
    const [axis, index] = key.split(":").map(Number);
    return { axis, index, data: base64(data) };
  });
  const body = { edits, status: $("status").value, note: $("note").value, reviewer: $("reviewer").value };
  const res = await api(`api/cases/${encodeURIComponent(state.case)}/save`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const record = await res.json();
  state.edits.clear(); state.undo = [];
  for (const key of [...state.cache.keys()]) if (!key.includes(":image:")) state.cache.delete(key);
  await showSlice(state.index);
  await listCases();
  for (const li of document.querySelectorAll("#cases li")) li.classList.toggle("current", li.dataset.case === state.case);
  message(`saved ${record.correction} (${record.status}; ${record.changed_voxels} voxels changed, Dice vs proposal ${record.dice_foreground.toFixed(3)})`);
  document.body.dataset.saved = String(Number(document.body.dataset.saved || 0) + 1);
}

function wire() {
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", startStroke);
  canvas.addEventListener("mousemove", (e) => { if (state.drawing) strokeTo(voxelAt(e)); });
  window.addEventListener("mouseup", () => { state.drawing = false; state.last = null; });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); showSlice(state.index + Math.sign(e.deltaY)); }, { passive: false });
  $("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
  $("view").addEventListener("change", (e) => setAxis(Number(e.target.value)));
  for (const id of ["window", "opacity"]) $(id).addEventListener("input", () => state.image && draw());
  $("uncertainty").addEventListener("change", () => state.info && showSlice(state.index));
  $("undo").addEventListener("click", undo);
  $("save").addEventListener("click", () => save().catch((e) => message(`not saved: ${e.message}`, true)));
  window.addEventListener("keydown", (e) => {
    if (["TEXTAREA", "INPUT", "SELECT"].includes(e.target.tagName)) return; // their own keys
    if (e.key === "ArrowUp") showSlice(state.index + 1);
    else if (e.key === "ArrowDown") showSlice(state.index - 1);
    else if (e.key === "z" && (e.ctrlKey || e.metaKey)) undo();
  });
}

async function main() {
  wire();
  const cases = await listCases();
  if (cases.length) await openCase(cases[0].case);
  else $("title").textContent = "no cases in this folder";
  document.body.dataset.ready = "1";
}

main().catch((e) => message(e.message, true));

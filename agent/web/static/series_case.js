"use strict";
// An MR case: slices of the series rendered by the server (window/level, lesion outlines), the lesion table with
// the AI's measurements and features, accept/reject/reclass per lesion with the keyboard, live counts, a note.
const root = document.querySelector(".series-case");
const api = "/api/cases/" + root.dataset.job;
const CLASSES = ["malignant", "benign"];
const FEATURES_SHOWN = 4;
const state = {volume: null, lesions: [], decisions: new Map(), selected: -1, axis: 0, slice: 0, center: 0, width: 1,
  outlines: true, mayDecide: false, loading: false, wanted: null};
const image = document.getElementById("slice-image");

function message(text) { document.getElementById("message").textContent = text; }
function bump(key) { document.body.dataset[key] = String(parseInt(document.body.dataset[key] || "0", 10) + 1); }
function fixed(value, digits) { return value == null ? "" : Number(value).toFixed(digits); }

// ---------------------------------------------------------------------------------------------- slices

function sliceUrl(k) {
  const query = new URLSearchParams({center: state.center.toFixed(3), width: state.width.toFixed(3), outlines: state.outlines ? "1" : "0", axis: String(state.axis)});
  return api + "/slices/" + k + ".png?" + query;
}

// One image request at a time: while one loads, only the newest wish is kept, so fast scrolling skips slices.
function draw() {
  const wish = sliceUrl(state.slice);
  if (state.loading) { state.wanted = wish; return; }
  state.loading = true;
  state.wanted = null;
  const k = state.slice, axis = state.axis;
  image.onload = () => {
    state.loading = false;
    document.body.dataset.slice = String(k);
    document.body.dataset.plane = state.volume.planes[axis].name;
    if (state.wanted) draw();
  };
  image.onerror = () => { state.loading = false; message("slice " + k + " cannot be shown"); if (state.wanted) draw(); };
  image.src = wish;
}

function onSlice(lesion) {
  const range = lesion.ranges && lesion.ranges[state.axis];
  return Boolean(range && range[0] <= state.slice && state.slice <= range[1]);
}

function showSlice(k) {
  if (!state.volume) return;
  const count = state.volume.planes[state.axis].slices;
  state.slice = Math.max(0, Math.min(count - 1, k));
  document.getElementById("slice").value = String(state.slice);
  document.getElementById("slice-value").textContent = (state.slice + 1) + " / " + count;
  for (const row of document.querySelectorAll("#lesions tr")) row.classList.toggle("on-slice", onSlice(state.lesions[parseInt(row.dataset.position, 10)]));
  draw();
}

// Another plane: the slider spans its slices; the view goes through the selected lesion, or the middle.
function setPlane(axis) {
  state.axis = axis;
  const plane = state.volume.planes[axis];
  document.getElementById("plane").value = String(axis);
  document.getElementById("slice").max = String(plane.slices - 1);
  const lesion = state.selected >= 0 ? state.lesions[state.selected] : null;
  const range = lesion && lesion.ranges ? lesion.ranges[axis] : null;
  showSlice(range ? Math.round((range[0] + range[1]) / 2) : Math.floor(plane.slices / 2));
}

function setWindow(center, width) {
  state.center = center;
  state.width = Math.max(1, width);
  document.getElementById("center").value = String(state.center);
  document.getElementById("width").value = String(state.width);
  document.getElementById("center-value").textContent = state.center.toFixed(0);
  document.getElementById("width-value").textContent = state.width.toFixed(0);
  draw();
}

function preset(name) {
  const v = state.volume, [lo, hi] = v.range;
  const windows = {default: [v.window.center, v.window.width], full: [(lo + hi) / 2, hi - lo],
    narrow: [v.window.center, v.window.width / 2], wide: [v.window.center, v.window.width * 2]};
  setWindow(...windows[name]);
}

function setupWindow() {
  const [lo, hi] = state.volume.range, span = Math.max(1, hi - lo);
  const center = document.getElementById("center"), width = document.getElementById("width");
  center.min = String(lo); center.max = String(hi); center.step = String(span / 500);
  width.min = "1"; width.max = String(2 * span); width.step = String(span / 500);
  center.addEventListener("input", () => setWindow(parseFloat(center.value), state.width));
  width.addEventListener("input", () => setWindow(state.center, parseFloat(width.value)));
  document.getElementById("preset").addEventListener("change", (event) => preset(event.target.value));
  // drag on the image: right widens the window, down raises the level (a fraction of the value range per pixel)
  let drag = null;
  const stage = document.getElementById("stage");
  stage.addEventListener("pointerdown", (event) => {
    drag = {x: event.clientX, y: event.clientY, center: state.center, width: state.width};
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const perPixel = span / 400;
    setWindow(drag.center + (event.clientY - drag.y) * perPixel, drag.width + (event.clientX - drag.x) * perPixel);
  });
  stage.addEventListener("pointerup", () => { drag = null; });
  stage.addEventListener("wheel", (event) => { event.preventDefault(); showSlice(state.slice + Math.sign(event.deltaY)); }, {passive: false});
}

// ---------------------------------------------------------------------------------------------- lesions

function decisionOf(lesion) { return state.decisions.get("l:" + lesion.index); }
function classOf(lesion) { const d = decisionOf(lesion); return (d && d.label) || lesion.label || "not classified"; }

function featureText(features, count) {
  const entries = Object.entries(features || {}).slice(0, count);
  return entries.map(([name, value]) => name.replace(/^original_/, "") + " " + Number(value).toPrecision(3)).join("; ");
}

function lesionRow(lesion, position) {
  const tr = document.createElement("tr");
  tr.dataset.position = String(position);
  tr.dataset.index = String(lesion.index);
  const first = OA.text("td", lesion.index);
  const swatch = document.createElement("span");
  swatch.className = "lesion-swatch";
  swatch.style.background = lesion.colour;
  first.prepend(swatch);
  const centroid = (lesion.centroid_lps_mm || []).map((v) => v.toFixed(1)).join(", ");
  const slices = lesion.slices ? (lesion.slices[0] + 1) + "–" + (lesion.slices[1] + 1) : "";
  const cells = [first, OA.text("td", fixed(lesion.volume_ml, 2)), OA.text("td", fixed(lesion.longest_diameter_mm, 1)),
    OA.text("td", centroid), OA.text("td", slices), OA.text("td", fixed(lesion.malignancy_probability, 3)),
    OA.text("td", "", "class"), OA.text("td", featureText(lesion.features, FEATURES_SHOWN), "features")];
  cells[cells.length - 1].title = featureText(lesion.features, Infinity);
  const actions = document.createElement("td");
  actions.className = "actions";
  for (const [label, key, act] of [["Accept", "C", () => accept(lesion)], ["Reject", "R", () => decide(lesion, "rejected", null)],
    ["Flip", "T", () => flip(lesion)]]) {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = label; button.title = label + " (" + key + ")";
    button.disabled = !state.mayDecide;
    button.addEventListener("click", (event) => { event.stopPropagation(); select(position); act(); });
    actions.append(button);
  }
  actions.prepend(OA.text("span", "", "decision"));
  tr.append(...cells, actions);
  tr.addEventListener("click", () => select(position, true));
  return tr;
}

function restyle() {
  for (const row of document.querySelectorAll("#lesions tr")) {
    const position = parseInt(row.dataset.position, 10), lesion = state.lesions[position];
    const decided = decisionOf(lesion);
    const kind = decided ? decided.decision : "undecided";
    row.querySelector(".class").textContent = classOf(lesion) + (decided && decided.label && decided.label !== lesion.label ? " (AI: " + lesion.label + ")" : "");
    row.querySelector(".class").title = (lesion.plausibility || []).join("; ");  // why it is "implausible — review"
    row.querySelector(".decision").textContent = kind === "confirmed" ? "accepted" : kind;
    row.className = ["lesion-row", kind, position === state.selected ? "selected" : "",
      onSlice(lesion) ? "on-slice" : ""].join(" ");
  }
}

function select(position, jump) {
  if (position < 0 || position >= state.lesions.length) return;
  state.selected = position;
  const lesion = state.lesions[position];
  document.body.dataset.lesion = String(lesion.index);
  if (jump && lesion.ranges) showSlice(Math.round((lesion.ranges[state.axis][0] + lesion.ranges[state.axis][1]) / 2));
  restyle();
}

function showCounts(counts) {
  for (const c of CLASSES) {
    document.getElementById("ai-" + c).textContent = counts.ai[c];
    document.getElementById("result-" + c).textContent = counts.result[c];
  }
  for (const k of ["accepted", "rejected", "undecided"]) document.getElementById("n-" + k).textContent = counts[k];
}

async function decide(lesion, decision, label) {
  if (!state.mayDecide) { message("you cannot decide on this case"); return; }
  try {
    const answer = await OA.json(api + "/decisions", {method: "POST", body: {target: "l:" + lesion.index, decision, label}});
    state.decisions = new Map(answer.decisions.map((d) => [d.target, d]));
    showCounts(answer.counts);
    restyle();
    document.getElementById("case-status").textContent = "in review";
    message("lesion " + lesion.index + ": " + (decision === "confirmed" ? "accepted" : decision || "undone") + (label ? " as " + label : ""));
    bump("saved");
  } catch (error) { message(error.message); }
}

function accept(lesion) { const c = classOf(lesion); decide(lesion, "confirmed", CLASSES.includes(c) ? c : null); }
function flip(lesion) { decide(lesion, "confirmed", classOf(lesion) === "malignant" ? "benign" : "malignant"); }

async function saveNote() {
  try {
    const answer = await OA.json(api + "/note", {method: "POST", body: {note: document.getElementById("note").value}});
    document.getElementById("note").value = answer.note || "";
    message("note saved");
    bump("noteSaved");
  } catch (error) { message(error.message); }
}

document.addEventListener("keydown", (event) => {
  if (["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName) || event.ctrlKey || event.metaKey || event.altKey) return;
  if (!state.volume) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const lesion = state.selected >= 0 ? state.lesions[state.selected] : null;
  if (key === "ArrowDown" || key === "j") showSlice(state.slice + 1);
  else if (key === "ArrowUp" || key === "k") showSlice(state.slice - 1);
  else if (key === "n") select(state.selected + 1, true);
  else if (key === "p") select(state.selected - 1, true);
  else if (key === "c" && lesion) accept(lesion);
  else if (key === "r" && lesion) decide(lesion, "rejected", null);
  else if (key === "t" && lesion) flip(lesion);
  else if (key === "u" && lesion) decide(lesion, null, null);
  else if (key === "v") setPlane((state.axis + 1) % 3);
  else if (key === "o") { const box = document.getElementById("outlines"); box.checked = !box.checked; box.dispatchEvent(new Event("change")); }
  else return;
  event.preventDefault();
});
document.getElementById("slice").addEventListener("input", (event) => showSlice(parseInt(event.target.value, 10)));
document.getElementById("outlines").addEventListener("change", (event) => { state.outlines = event.target.checked; draw(); });
document.getElementById("save-note").addEventListener("click", saveNote);
OA.review.wire(api, document.getElementById("note"), () => load(), message);
document.getElementById("plane").addEventListener("change", (event) => setPlane(parseInt(event.target.value, 10)));

async function load() {
  const [data, volume] = await Promise.all([OA.json(api), OA.json(api + "/volume")]);
  document.getElementById("case-title").textContent = data.name;
  document.getElementById("finding").textContent = data.finding;
  state.mayDecide = OA.review.show(data);
  state.volume = volume;
  const placed = new Map(volume.lesions.map((l) => [l.index, l]));
  state.lesions = (data.summary.lesions || []).map((l) => ({...l, ...(placed.get(l.index) || {})}));
  state.decisions = new Map(data.decisions.map((d) => [d.target, d]));
  document.getElementById("note").value = (data.review && data.review.note) || "";
  document.getElementById("note").disabled = !state.mayDecide;
  document.getElementById("save-note").disabled = !state.mayDecide;
  if (volume.outline_error) message("no outlines: " + volume.outline_error);
  showCounts(data.counts);
  document.getElementById("lesions").replaceChildren(...state.lesions.map(lesionRow));
  const planes = document.getElementById("plane");
  planes.replaceChildren(...volume.planes.map((p) => { const o = OA.text("option", p.name + (p.acquired ? " (acquired)" : "")); o.value = String(p.axis); return o; }));
  document.getElementById("slice").max = String(volume.slices - 1);
  setupWindow();
  state.center = volume.window.center;
  state.width = volume.window.width;
  const first = state.lesions.findIndex((l) => l.slices);
  if (first >= 0) select(first, true);
  else showSlice(Math.floor(volume.slices / 2));
  setWindow(volume.window.center, volume.window.width);
  restyle();
  await new Promise((resolve) => { if (document.body.dataset.slice !== undefined) resolve(); else image.addEventListener("load", resolve, {once: true}); });
  document.body.dataset.loaded = "1";
}
load().catch((error) => { message(error.message); document.getElementById("finding").textContent = error.message; });

"use strict";
// A slide case: the zoomable slide with the AI's detections over it, the candidate gallery, keyboard review.
const root = document.querySelector(".case");
const jobId = root.dataset.job;
const api = "/api/cases/" + jobId;
const CLASSES = ["CTC", "CTM"];
const state = {detections: [], decisions: new Map(), current: -1, order: [], addMode: false, mayDecide: false, overlays: new Map()};

const viewer = OpenSeadragon({
  id: "viewer", prefixUrl: "/static/vendor/openseadragon/images/", tileSources: api + "/slide.dzi",
  showNavigator: true, maxZoomPixelRatio: 4, gestureSettingsMouse: {clickToZoom: false}, crossOriginPolicy: false,
});
let tilesLoaded = 0;
viewer.addHandler("tile-loaded", () => { tilesLoaded += 1; document.body.dataset.tiles = String(tilesLoaded); });
viewer.addHandler("open", () => { drawOverlays(); });
viewer.addHandler("canvas-click", (event) => {
  if (!state.addMode || !event.quick) return;
  event.preventDefaultAction = true;
  const point = viewer.viewport.viewerElementToImageCoordinates(event.position);
  addCell(point.x, point.y);
});

function labelOf(d) { const decided = state.decisions.get("d:" + d.index); return (decided && decided.label) || d.class; }
function decisionOf(d) { const decided = state.decisions.get("d:" + d.index); return decided ? decided.decision : "undecided"; }
function shown(d) {
  const minimum = parseFloat(document.getElementById("confidence").value);
  return document.getElementById("show-" + labelOf(d)).checked && (d.confidence == null || d.confidence >= minimum);
}

function message(text) { document.getElementById("message").textContent = text; }

function overlayElement(d) {
  const element = document.createElement("div");
  element.className = "det";
  element.dataset.index = d.index;
  element.addEventListener("click", () => select(state.order.indexOf(d.index)));
  return element;
}

function drawOverlays() {
  if (!viewer.world.getItemAt(0)) return;
  viewer.clearOverlays();
  state.overlays.clear();
  for (const d of state.detections) {
    const [x0, y0, x1, y1] = d.box;
    const element = overlayElement(d);
    state.overlays.set(d.index, element);
    viewer.addOverlay({element, location: viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0)});
  }
  for (const [target, decided] of state.decisions) {
    if (!target.startsWith("a:") || !decided.geometry) continue;
    const [x0, y0, x1, y1] = decided.geometry;
    const element = document.createElement("div");
    element.className = "det added " + (decided.label || "CTC");
    element.dataset.target = target;
    viewer.addOverlay({element, location: viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0)});
  }
  restyle();
}

function restyle() {
  let visible = 0;
  for (const d of state.detections) {
    const cls = labelOf(d), decision = decisionOf(d), show = shown(d);
    if (show) visible += 1;
    const current = state.order[state.current] === d.index;
    const element = state.overlays.get(d.index);
    if (element) element.className = ["det", cls, decision, current ? "current" : "", show ? "" : "hidden"].join(" ");
    const tile = document.querySelector('.crop[data-index="' + d.index + '"]');
    if (tile) {
      tile.className = ["crop", cls, decision, current ? "current" : "", show ? "" : "hidden"].join(" ");
      tile.querySelector(".label").textContent = cls + " " + (d.confidence == null ? "" : d.confidence.toFixed(2));
    }
  }
  document.body.dataset.overlays = String(visible);
}

function showCounts(counts) {
  for (const c of CLASSES) {
    document.getElementById("ai-" + c).textContent = counts.ai[c];
    document.getElementById("result-" + c).textContent = counts.result[c];
  }
  for (const k of ["confirmed", "rejected", "added", "undecided"]) document.getElementById("n-" + k).textContent = counts[k];
}

function buildGallery() {
  const gallery = document.getElementById("gallery");
  const tiles = state.order.map((index, position) => {
    const d = state.detections[index];
    const tile = document.createElement("figure");
    tile.className = "crop";
    tile.dataset.index = index;
    const img = document.createElement("img");
    img.loading = "lazy"; img.alt = "candidate " + index; img.src = api + "/crops/" + index + ".jpeg";
    tile.append(img);
    if (state.fluorescence) {  // a fluorescence slide: each channel (stain) on its own, in grey, under the crop
      const channels = document.createElement("div");
      channels.className = "channels";
      for (const channel of [0, 1, 2]) {
        const part = document.createElement("img");
        part.loading = "lazy"; part.alt = "channel " + channel; part.src = api + "/crops/" + index + ".jpeg?channel=" + channel;
        channels.append(part);
      }
      tile.append(channels);
    }
    tile.append(OA.text("figcaption", "", "label"));
    tile.addEventListener("click", () => select(position));
    return tile;
  });
  gallery.replaceChildren(...tiles);
}

function select(position) {
  if (position < 0 || position >= state.order.length) return;
  state.current = position;
  const d = state.detections[state.order[position]];
  const [x0, y0, x1, y1] = d.box;
  const margin = Math.max(x1 - x0, y1 - y0) * 4;
  if (viewer.world.getItemAt(0)) {
    viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(x0 - margin, y0 - margin, x1 - x0 + 2 * margin, y1 - y0 + 2 * margin));
  }
  restyle();
  const tile = document.querySelector('.crop[data-index="' + d.index + '"]');
  if (tile) tile.scrollIntoView({block: "nearest"});
  document.body.dataset.current = String(d.index);
}

function move(step) {
  let position = state.current;
  do { position += step; } while (position >= 0 && position < state.order.length && !shown(state.detections[state.order[position]]));
  if (position >= 0 && position < state.order.length) select(position);
}

function apply(answer) {
  document.getElementById("case-status").textContent = "in review";
  document.body.dataset.review = "in_review";
  state.decisions = new Map(answer.decisions.map((d) => [d.target, d]));
  showCounts(answer.counts);
  drawOverlays();
}

async function decide(decision, label) {
  if (!state.mayDecide) { message("you cannot decide on this case"); return; }
  if (state.current < 0) { message("select a candidate first (J)"); return; }
  const d = state.detections[state.order[state.current]];
  try {
    apply(await OA.json(api + "/decisions", {method: "POST", body: {target: "d:" + d.index, decision, label}}));
    message("candidate " + d.index + ": " + (decision || "undone") + (label ? " as " + label : ""));
    document.body.dataset.saved = String((parseInt(document.body.dataset.saved || "0", 10)) + 1);
  } catch (error) { message(error.message); }
}

async function addCell(x, y) {
  const half = 20;
  try {
    const answer = await OA.json(api + "/added", {method: "POST", body: {box: [x - half, y - half, x + half, y + half], label: "CTC"}});
    apply(answer);
    message("added " + answer.target);
    document.body.dataset.saved = String((parseInt(document.body.dataset.saved || "0", 10)) + 1);
  } catch (error) { message(error.message); }
  setAddMode(false);
}

function setAddMode(on) {
  state.addMode = on;
  document.getElementById("add-mode").classList.toggle("active", on);
  document.getElementById("viewer").classList.toggle("adding", on);
  if (on) message("click on the slide where the missed cell is");
}

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  const current = state.current >= 0 ? state.detections[state.order[state.current]] : null;
  if (key === "j") move(1);
  else if (key === "k") move(-1);
  else if (key === "c" && current) decide("confirmed", labelOf(current));
  else if (key === "r" && current) decide("rejected", null);
  else if (key === "t" && current) decide("confirmed", labelOf(current) === "CTC" ? "CTM" : "CTC");
  else if (key === "u" && current) decide(null, null);
  else if (key === "a") setAddMode(!state.addMode);
  else return;
  event.preventDefault();
});
document.getElementById("add-mode").addEventListener("click", () => setAddMode(!state.addMode));
for (const id of ["show-CTC", "show-CTM", "confidence"]) {
  document.getElementById(id).addEventListener("input", () => {
    document.getElementById("confidence-value").textContent = parseFloat(document.getElementById("confidence").value).toFixed(2);
    restyle();
  });
}

OA.review.wire(api, document.getElementById("note"), () => load(), message);

async function load() {
  const data = await OA.json(api);
  document.getElementById("case-title").textContent = data.name;
  state.mayDecide = OA.review.show(data);
  document.getElementById("note").hidden = !state.mayDecide;
  state.detections = data.detections;
  state.fluorescence = data.modality === "fluorescence";
  state.order = data.detections.map((d) => d.index).sort((a, b) => (data.detections[b].confidence || 0) - (data.detections[a].confidence || 0));
  state.decisions = new Map(data.decisions.map((d) => [d.target, d]));
  showCounts(data.counts);
  buildGallery();
  drawOverlays();
  document.body.dataset.loaded = "1";
}
load().catch((error) => message(error.message));

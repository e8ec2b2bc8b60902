"use strict";
// An MR case: the finding, the result's preview and the lesion table (slice review comes next).
const root = document.querySelector(".series-case");
const api = "/api/cases/" + root.dataset.job;

async function load() {
  const data = await OA.json(api);
  document.getElementById("case-title").textContent = data.name;
  document.getElementById("case-status").textContent = data.status_text;
  document.getElementById("finding").textContent = data.finding;
  if (data.thumbnail) document.getElementById("preview").src = data.thumbnail;
  const rows = (data.summary.lesions || []).map((l) => {
    const tr = document.createElement("tr");
    const centroid = (l.centroid_lps_mm || []).map((v) => v.toFixed(1)).join(", ");
    for (const value of [l.index, l.volume_ml, l.longest_diameter_mm, centroid, l.malignancy_probability, l.label]) tr.append(OA.text("td", value));
    return tr;
  });
  document.getElementById("lesions").replaceChildren(...rows);
  document.body.dataset.loaded = "1";
}
load().catch((error) => { document.getElementById("finding").textContent = error.message; });

"use strict";
// The worklist: one page of cases from /api/cases with the filters, refreshed every few seconds.
const REFRESH_MS = 5000;
let page = 1;

function query() {
  const params = new URLSearchParams();
  for (const element of document.getElementById("filters").elements) {
    if (element.type === "checkbox") { if (element.checked) params.set(element.name, "true"); }
    else if (element.type === "date") {  // a day in local time: from its start, to the start of the next
      if (!element.value) continue;
      const day = new Date(element.value + "T00:00:00");
      if (element.name === "to") day.setDate(day.getDate() + 1);
      params.set(element.name === "from" ? "since" : "until", String(day.getTime() / 1000));
    }
    else if (element.value) params.set(element.name, element.value);
  }
  params.set("page", String(page));
  return params;
}

function row(c) {
  const tr = document.createElement("tr");
  tr.className = "case-row priority-" + c.priority + " status-" + c.status;
  tr.dataset.job = c.job_id;
  const thumb = document.createElement("td");
  if (c.thumbnail) { const img = document.createElement("img"); img.src = c.thumbnail; img.alt = ""; img.loading = "lazy"; thumb.append(img); }
  const priority = OA.text("td", c.priority, "priority");
  if (c.ai_priority) priority.append(OA.text("div", "AI: " + c.ai_priority, "muted ai-priority"));
  tr.append(thumb, priority);
  const name = document.createElement("td");
  const link = document.createElement("a"); link.href = "/cases/" + c.job_id; link.textContent = c.name; name.append(link, OA.text("div", c.pipeline, "muted"));
  tr.append(name, OA.text("td", [c.accession, c.patient_id].filter(Boolean).join(" / ")));
  const finding = OA.text("td", c.finding, "finding");
  if (c.discordant) finding.append(OA.text("span", "discordant", "flag"));
  if (c.no_context) finding.append(OA.text("span", "no patient context", "flag"));
  if (c.validation_mark) {  // the result's models have no acceptance record at this site: the full text on hover
    const mark = OA.text("span", "model not validated at this site", "flag unvalidated");
    mark.title = c.validation_mark;
    finding.append(mark);
  }
  tr.append(finding, OA.text("td", c.ai_score == null ? "" : c.ai_score.toFixed(2)), OA.text("td", c.status_text, "status"),
            OA.text("td", c.signed_by || c.holder || ""), OA.text("td", OA.time(c.received_at)), OA.text("td", OA.time(c.analysed_at)));
  tr.addEventListener("click", (event) => { if (event.target.tagName !== "A") location.href = "/cases/" + c.job_id; });
  return tr;
}

// Cases of one accession (or, without one, one patient) are kept together under a header row, at the place of
// the group's most pressing case; a case without either stands alone.
function grouped(cases) {
  const groups = new Map();
  for (const c of cases) {
    const key = c.accession ? "accession " + c.accession : c.patient_id ? "patient " + c.patient_id : "case " + c.job_id;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(c);
  }
  const rows = [];
  for (const [key, members] of groups) {
    if (members.length > 1) {
      const header = document.createElement("tr");
      header.className = "group-row";
      const cell = OA.text("td", key + " · " + members.length + " cases");
      cell.colSpan = 10;
      header.append(cell);
      rows.push(header);
    }
    rows.push(...members.map(row));
  }
  return rows;
}

async function load() {
  try {
    const data = await OA.json("/api/cases?" + query().toString());
    document.getElementById("cases").replaceChildren(...grouped(data.cases));
    document.getElementById("total").textContent = data.total;
    document.getElementById("page").textContent = String(page);
    document.getElementById("prev").disabled = page <= 1;
    document.getElementById("next").disabled = page * data.page_size >= data.total;
    document.getElementById("updated").textContent = "· updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (error) {
    document.getElementById("updated").textContent = "· " + error.message;
  }
}

document.getElementById("filters").addEventListener("input", () => { page = 1; load(); });
document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("prev").addEventListener("click", () => { page = Math.max(1, page - 1); load(); });
document.getElementById("next").addEventListener("click", () => { page += 1; load(); });
load();
setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);

"use strict";
// The admin page: failed jobs (retry), slides waiting for patient context (attach it), review statistics, accounts.
const CONTEXT_FIELDS = [["patient_id", "patient ID", true], ["accession_number", "accession number", true],
                        ["patient_name", "patient name (Last^First)", false], ["study_uid", "study UID (optional)", false]];
let failedPage = 1;

function message(text, error) {
  const element = document.getElementById("message");
  element.textContent = text;
  element.className = "summary" + (error ? " flag" : "");
}

function button(label, cls, onClick) {
  const b = OA.text("button", label, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function failedRow(job) {
  const tr = document.createElement("tr");
  tr.className = "failed-row";
  tr.dataset.job = job.job_id;
  const retry = button("Retry", "retry", async () => {
    retry.disabled = true;
    try {
      await OA.json("/api/admin/jobs/" + job.job_id + "/retry", {method: "POST", body: {}});
      message("job " + job.job_id + " queued again");
      await loadFailed();
    } catch (error) { message("job " + job.job_id + ": " + error.message, true); retry.disabled = false; }
  });
  const action = document.createElement("td");
  action.append(retry);
  tr.append(OA.text("td", job.job_id), OA.text("td", job.name), OA.text("td", job.pipeline),
            OA.text("td", job.attempts + "/" + job.max_attempts), OA.text("td", job.reason, "reason"),
            OA.text("td", OA.time(job.finished_at)), action);
  return tr;
}

async function loadFailed() {
  const data = await OA.json("/api/admin/failed?page=" + failedPage);
  document.getElementById("failed").replaceChildren(...data.jobs.map(failedRow));
  document.getElementById("failed-total").textContent = "(" + data.total + ")";
  document.getElementById("failed-page").textContent = String(failedPage);
  document.getElementById("failed-prev").disabled = failedPage <= 1;
  document.getElementById("failed-next").disabled = failedPage * data.page_size >= data.total;
}

function contextForm(slide) {
  const form = document.createElement("form");
  form.className = "context-form";
  for (const [name, label, required] of CONTEXT_FIELDS) {
    const input = document.createElement("input");
    input.name = name; input.placeholder = label; input.required = required; input.setAttribute("aria-label", label);
    form.append(input);
  }
  const submit = OA.text("button", "Attach");
  submit.type = "submit";
  form.append(submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const element of form.elements) if (element.name && element.value.trim()) body[element.name] = element.value.trim();
    submit.disabled = true;
    try {
      const answer = await OA.json("/api/admin/inputs/" + slide.input_id + "/context", {method: "POST", body});
      message(answer.detail);
      await loadNoContext();
    } catch (error) { message("slide " + slide.name + ": " + error.message, true); submit.disabled = false; }
  });
  return form;
}

function noContextRow(slide) {
  const tr = document.createElement("tr");
  tr.className = "no-context-row";
  tr.dataset.job = slide.job_id;
  const attach = document.createElement("td");
  attach.append(slide.waiting ? contextForm(slide) : OA.text("span", "context attached: " + slide.status, "muted"));
  tr.append(OA.text("td", slide.job_id), OA.text("td", slide.name), OA.text("td", slide.reason, "reason"),
            OA.text("td", OA.time(slide.finished_at)), attach);
  return tr;
}

async function loadNoContext() {
  const data = await OA.json("/api/admin/no-context");
  document.getElementById("no-context").replaceChildren(...data.slides.map(noContextRow));
  document.getElementById("no-context-total").textContent = "(" + data.total + ")";
}

function ratio(value) { return value == null ? "" : (100 * value).toFixed(1) + " %"; }

async function loadStats() {
  const data = await OA.json("/api/admin/review-stats");
  document.getElementById("stats").replaceChildren(...data.models.map((m) => {
    const tr = document.createElement("tr");
    tr.className = "stats-row";
    tr.append(OA.text("td", m.pipeline), OA.text("td", m.model_version), OA.text("td", m.cases), OA.text("td", m.shown),
              OA.text("td", m.confirmed), OA.text("td", m.rejected), OA.text("td", m.kind === "slide" ? m.reclassed : ""),
              OA.text("td", m.kind === "slide" ? m.added : ""), OA.text("td", ratio(m.precision)),
              OA.text("td", m.kind === "slide" && m.added_per_case != null ? m.added_per_case.toFixed(2) : ""));
    return tr;
  }));
}

function userRow(u) {
  const tr = document.createElement("tr");
  tr.className = "user-row";
  tr.dataset.name = u.name;
  const action = document.createElement("td");
  if (!u.disabled_at && u.name !== document.getElementById("users-section").dataset.me) {
    const disable = button("Disable", "disable", async () => {
      disable.disabled = true;
      try {
        await OA.json("/api/admin/users/" + encodeURIComponent(u.name) + "/disable", {method: "POST", body: {}});
        message("account " + u.name + " disabled");
        await loadUsers();
      } catch (error) { message(u.name + ": " + error.message, true); disable.disabled = false; }
    });
    action.append(disable);
  }
  tr.append(OA.text("td", u.name), OA.text("td", u.role), OA.text("td", OA.time(u.created_at)),
            OA.text("td", OA.time(u.disabled_at)), OA.text("td", u.password ? "set" : "proxy only"), action);
  return tr;
}

async function loadUsers() {
  const data = await OA.json("/api/admin/users");
  document.getElementById("users").replaceChildren(...data.users.map(userRow));
}

document.getElementById("add-user").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = {name: form.elements.name.value.trim(), role: form.elements.role.value, password: form.elements.password.value};
  try {
    await OA.json("/api/admin/users", {method: "POST", body});
    message("account " + body.name + " added as " + body.role);
    form.reset();
    await loadUsers();
  } catch (error) { message(body.name + ": " + error.message, true); }
});

document.getElementById("failed-prev").addEventListener("click", () => { failedPage = Math.max(1, failedPage - 1); loadFailed(); });
document.getElementById("failed-next").addEventListener("click", () => { failedPage += 1; loadFailed(); });
Promise.all([loadFailed(), loadNoContext(), loadStats(), loadUsers()])
  .then(() => { document.body.dataset.loaded = "1"; })
  .catch((error) => message(error.message, true));

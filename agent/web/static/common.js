"use strict";
// Shared by the pages: the CSRF token and JSON requests that carry it.
const OA = {
  csrf: () => document.querySelector('meta[name="csrf-token"]').content,
  async json(url, options = {}) {
    const init = {credentials: "same-origin", ...options, headers: {"Accept": "application/json", ...(options.headers || {})}};
    if (init.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = OA.csrf();
      init.body = JSON.stringify(init.body);
    }
    const answer = await fetch(url, init);
    if (answer.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("signed out"); }
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(data.detail ? JSON.stringify(data.detail) : answer.statusText);
    return data;
  },
  time(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : ""; },
  text(tag, value, cls) { const e = document.createElement(tag); e.textContent = value == null ? "" : String(value); if (cls) e.className = cls; return e; },
  // The sign-off controls of a case page (#sign-off, #reopen, #signed, a note box): show() says whether the
  // reviewer may still decide; wire() makes the buttons sign off (the note with it) and reopen, then reload.
  review: {
    show(data) {
      const review = data.review;
      const signed = Boolean(review && review.status === "signed_off");
      const may = Boolean(data.may_decide) && !signed;
      document.getElementById("case-status").textContent = data.status_text + (review ? " · v" + review.version : "");
      document.getElementById("sign-off").hidden = !may;
      document.getElementById("reopen").hidden = !(signed && data.may_decide);
      document.getElementById("signed").textContent = signed
        ? "Signed off by " + review.signed_by + " on " + OA.time(review.signed_at) + (review.note ? " — " + review.note : "") : "";
      document.body.dataset.review = review ? review.status : "none";
      return may;
    },
    wire(api, note, reload, message) {
      document.getElementById("sign-off").addEventListener("click", async () => {
        try {
          const answer = await OA.json(api + "/sign-off", {method: "POST", body: {note: note.value.trim() || null}});
          message("signed off (version " + answer.version + ")" + (answer.sr_sop_instance_uid ? "; verified SR queued for PACS" : "")
                  + (answer.unsent_reason ? "; " + answer.unsent_reason : "") + (answer.outputs_error ? "; outputs failed: " + answer.outputs_error : ""));
          await reload();
        } catch (error) { message(error.message); }
      });
      document.getElementById("reopen").addEventListener("click", async () => {
        try {
          const answer = await OA.json(api + "/reopen", {method: "POST", body: {}});
          message("reopened as version " + answer.version);
          await reload();
        } catch (error) { message(error.message); }
      });
    },
  },
};

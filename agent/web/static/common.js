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
};

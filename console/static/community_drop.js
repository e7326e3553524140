// A drop's page: the delivery report, refreshed by polling the JSON API while the drop is
// active (every few seconds; slower once everything is finished).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const { api, el } = window.Kz;
  const body = document.body;
  const id = body.dataset.drop;
  const every = Number(body.dataset.poll) || 4000;
  const tbody = document.getElementById("runs");
  const status = document.getElementById("drop-status");
  const errors = document.getElementById("errors");
  const refreshed = document.getElementById("refreshed");
  const nextRun = document.getElementById("next-run");
  const FINAL = new Set(["done", "cancelled", "missed"]);
  const COUNTS = ["sent", "failed", "blocked", "skipped", "pending"];
  const TIMES = ["started_at", "first_sent_at", "last_sent_at", "finished_at"];
  if (!id || !tbody) return;

  function badge(s) { return el("span", { class: "badge s-" + s }, s); }

  function row(r) {
    const note = (r.note || "") + (r.in_doubt ? " (" + r.in_doubt + " in doubt)" : "");
    return el("tr", { dataset: { run: r.run_id } },
      el("td", {}, "#" + r.run_id),
      el("td", {}, r.local.scheduled_for),
      el("td", { dataset: { key: "status" } }, badge(r.status)),
      COUNTS.map((k) => el("td", { class: "num", dataset: { key: k } }, r.counts[k] || 0)),
      el("td", { class: "num", dataset: { key: "total" } }, r.total),
      TIMES.map((k) => el("td", { dataset: { key: k } }, r.local[k])),
      el("td", { dataset: { key: "note" } }, note));
  }

  function render(data) {
    if (data.runs.length) tbody.replaceChildren(...data.runs.map(row));
    if (status) status.replaceChildren(badge(data.drop.status));
    if (nextRun && !data.drop.next_run) nextRun.textContent = "—";
    if (errors) {
      errors.replaceChildren(...(data.errors.length ? data.errors.map((e) =>
        el("li", {}, e.count + " × " + e.status + " ", el("span", { class: "muted" }, e.error)))
        : [el("li", { class: "muted" }, "None.")]));
    }
    if (refreshed) refreshed.textContent = "(last " + new Date().toLocaleTimeString() + ")";
  }

  async function refresh() {
    let wait = every;
    try {
      const data = await api("GET", "/api/community/drops/" + id + "/report");
      render(data);
      const active = !FINAL.has(data.drop.status) || data.runs.some((r) => !FINAL.has(r.status));
      if (!active) wait = every * 15;
    } catch (e) {
      wait = every * 3;
      if (refreshed) refreshed.textContent = "(refresh failed: " + e.message + ")";
    }
    setTimeout(refresh, document.hidden ? wait * 3 : wait);
  }
  setTimeout(refresh, every);
});

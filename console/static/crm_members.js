// CRM member search: searches while typing (after a pause), drops stale answers, keeps the
// query in the URL so Back returns to the same results.
"use strict";
(function () {
  const Kz = window.Kz;
  const form = document.getElementById("member-search");
  const input = document.getElementById("q");
  const state = document.getElementById("search-state");
  const table = document.getElementById("results");
  const tbody = table.querySelector("tbody");
  let seq = 0;
  let shown = null;

  function money(v) { return "¥" + Math.round(v || 0).toLocaleString(); }

  // Worth a query while typing: two characters, a non-Latin one (a kanji is a name), or digits.
  function worth(q) { return q.length >= 2 || /[^\x00-\x7f]/.test(q) || /^\d+$/.test(q); }

  function clear(message) {
    tbody.replaceChildren();
    table.hidden = true;
    state.textContent = message || "";
  }

  function row(m) {
    const url = Kz.prefix + "/crm/members/" + m.contact_id;
    const sub = [m.shop_customer_id ? "shop " + m.shop_customer_id : null, m.email]
      .filter(Boolean).join(" · ");
    const flags = [];
    if (m.needs_care) flags.push(Kz.el("span", { class: "badge senior" }, "needs care"));
    if (!m.marketable) flags.push(Kz.el("span", { class: "badge" }, "no marketing"));
    return Kz.el("tr", {},
      Kz.el("td", {},
        Kz.el("a", { href: url }, m.display_name || "Member #" + m.contact_id), " ",
        Kz.el("small", {}, "#" + m.contact_id), " ", flags,
        sub ? Kz.el("span", { class: "sub" }, sub) : null),
      Kz.el("td", {}, m.identities.map((i) => Kz.el("span", { class: "badge" },
        i.platform + (i.username ? " @" + i.username : ""))).flatMap((b) => [b, " "])),
      Kz.el("td", {}, Kz.el("span", { class: "tier tier-" + m.tier }, m.tier)),
      Kz.el("td", { class: "num" }, m.order_count),
      Kz.el("td", { class: "num" }, money(m.total_spend)),
      Kz.el("td", { class: "num" }, money(m.ltv)),
      Kz.el("td", { class: "num" }, Math.round(m.koc_score)),
      Kz.el("td", { class: "muted" }, m.matched));
  }

  async function search(force) {
    const q = input.value.trim();
    if (!q) { seq++; shown = null; clear(""); return; }
    if (!force && (q === shown || !worth(q))) return;
    const mine = ++seq;
    state.textContent = "Searching…";
    try {
      const data = await Kz.api("GET", "/api/crm/members?q=" + encodeURIComponent(q));
      if (mine !== seq) return;  // a newer query is on its way
      shown = q;
      history.replaceState(null, "", "?q=" + encodeURIComponent(q));
      if (!data.results.length) { clear("No member matches “" + q + "”."); return; }
      tbody.replaceChildren(...data.results.map(row));
      table.hidden = false;
      const n = data.results.length;
      state.textContent = n + (data.more ? "+" : "") + " member" +
        (n === 1 && !data.more ? "" : "s") + " · " + data.ms + " ms" +
        (data.more ? " · the first " + n + " shown: type more to narrow the search" : "");
    } catch (e) {
      if (mine === seq) { clear(""); Kz.fail(e); }
    }
  }

  input.addEventListener("input", Kz.debounce(() => search(false), 300));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); search(true); });
  if (input.value.trim()) search(true);
})();

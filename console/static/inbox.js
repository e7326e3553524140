// The inbox: queue, my conversations, all open ones (managers), recently resolved; live.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const { api, el, ago, fail, toast, debounce, live, prefix } = window.Kz;

  function row(v, withClaim) {
    const link = prefix + "/conversations/" + v.conversation_id;
    const meta = [
      el("span", { class: "badge " + v.status }, v.status),
      v.platform ? el("span", {}, v.platform) : null,
      v.language ? el("span", {}, v.language) : null,
      v.needs_senior ? el("span", { class: "badge senior" }, "needs care") : null,
      v.advisor ? el("span", {}, "· " + v.advisor) : null,
      el("span", { title: v.requested_at }, "· asked " + ago(v.requested_at)),
    ];
    const claim = withClaim ? el("button", {
      class: "small primary", type: "button", dataset: { claim: v.conversation_id },
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api("POST", "/api/conversations/" + v.conversation_id + "/claim");
          location.href = link;
        } catch (e) { fail(e); ev.target.disabled = false; }
      },
    }, "Take") : null;
    return el("li", { dataset: { conversation: v.conversation_id } },
      el("div", { class: "main" },
        el("a", { class: "name", href: link }, v.customer),
        el("div", { class: "last" }, v.last_message || v.question || "—"),
        el("div", { class: "meta" }, meta)),
      claim);
  }

  function fill(id, items, withClaim) {
    const list = document.getElementById(id);
    if (!list) return;
    list.replaceChildren(...items.map((v) => row(v, withClaim)));
    const count = document.getElementById(id + "-count");
    if (count) count.textContent = items.length ? "(" + items.length + ")" : "";
  }

  let shownQueue = null;
  async function refresh() {
    try {
      const data = await api("GET", "/api/inbox");
      fill("queue", data.queue, true);
      fill("mine", data.mine, false);
      fill("recent", data.recent, false);
      if (data.open) fill("open", data.open, false);
      if (shownQueue !== null && data.queue.length > shownQueue) toast("A customer is waiting");
      shownQueue = data.queue.length;
      window.Kz.setShift(data.me.on_shift);
    } catch (e) { fail(e); }
  }

  const soon = debounce(refresh, 150);
  live(() => soon(), refresh);
  refresh();
  setInterval(() => {  // keep "asked … ago" fresh
    document.querySelectorAll(".rows .meta span[title]").forEach((node) => {
      node.textContent = "· asked " + ago(node.title);
    });
  }, 30000);
});

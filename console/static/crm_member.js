// CRM member profile: add and remove tags, opt out / opt in, create the invite link.
"use strict";
(function () {
  const Kz = window.Kz;
  const base = "/api/crm/members/" + document.body.dataset.contactId;
  const tags = document.getElementById("tags");
  const tagForm = document.getElementById("tag-form");
  const tagInput = document.getElementById("tag-input");

  function chip(t) {
    const manual = t.source === "manual";
    return Kz.el("li", { class: manual ? "chip" : "chip auto", dataset: { tag: t.tag },
                         title: manual ? "added by hand" : "automatic (" + t.source + ")" },
      t.tag, " ",
      Kz.el("button", { type: "button", class: "remove", "aria-label": "Remove tag " + t.tag },
            "×"));
  }

  function renderTags(list) { tags.replaceChildren(...list.map(chip)); }

  tagForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const tag = tagInput.value.trim();
    if (!tag) return;
    try {
      const data = await Kz.api("POST", base + "/tags", { tag });
      renderTags(data.tags);
      tagInput.value = "";
      Kz.toast(data.added ? "Tag added" : "The member already has this tag");
    } catch (e) { Kz.fail(e); }
  });

  tags.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.remove");
    if (!button) return;
    const li = button.closest("li");
    const tag = li.dataset.tag;
    if (li.classList.contains("auto") &&
        !confirm("“" + tag + "” is added by a rule: it comes back when the rule runs again " +
                 "and the member still matches. Remove it anyway?")) return;
    button.disabled = true;
    try {
      const data = await Kz.api("POST", base + "/tags/remove", { tag });
      renderTags(data.tags);
      Kz.toast(data.removed ? "Tag removed" : "The member did not have this tag");
    } catch (e) { button.disabled = false; Kz.fail(e); }
  });

  const optOut = document.getElementById("opt-out-form");
  optOut.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!confirm("Stop all marketing to this member (drops, sequences, birthday messages)?")) {
      return;
    }
    try {
      await Kz.api("POST", base + "/opt-out",
                   { reason: document.getElementById("opt-out-reason").value });
      location.reload();
    } catch (e) { Kz.fail(e); }
  });

  document.getElementById("opt-in").addEventListener("click", async () => {
    if (!confirm("Record that this member agreed to receive marketing?")) return;
    try {
      await Kz.api("POST", base + "/opt-in", {});
      location.reload();
    } catch (e) { Kz.fail(e); }
  });

  document.getElementById("invite-make").addEventListener("click", async () => {
    try {
      const data = await Kz.api("POST", base + "/invite", {});
      document.getElementById("invite").textContent = data.invite;
    } catch (e) { Kz.fail(e); }
  });
})();

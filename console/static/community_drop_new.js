// The new-drop form: show only the fields of the chosen kind, audience and schedule.
// Elements carry data-when="select-id:value[,value]"; without this script everything shows.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("drop-form");
  if (!form) return;
  const nodes = Array.from(form.querySelectorAll("[data-when]"));

  function update() {
    for (const node of nodes) {
      const [key, values] = node.dataset.when.split(":");
      const select = document.getElementById(key);
      if (!select) continue;
      const hidden = !values.split(",").includes(select.value);
      node.hidden = hidden;
      // a hidden field is not sent either (a coupon left chosen before switching to content)
      node.querySelectorAll("input, select, textarea").forEach((i) => { i.disabled = hidden; });
    }
  }
  for (const key of ["kind", "target", "schedule"]) {
    const select = document.getElementById(key);
    if (select) select.addEventListener("change", update);
  }
  update();
});

// CRM segment builder: a small form that writes the rule JSON (the textarea is the one source
// of truth), a live count while editing (after a pause; stale answers dropped), saved segments.
"use strict";
(function () {
  const Kz = window.Kz;
  const $ = (id) => document.getElementById(id);
  const FIELDS = JSON.parse(document.body.dataset.fields || "{}");
  const OPTIONS = JSON.parse(document.body.dataset.options || "{}");
  const LIST_OPS = new Set(["in", "not_in", "has_any", "has_all", "contains_any", "member_of",
                            "not_member_of"]);
  const ALIASES = { "=": "eq", "==": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt",
                    "<=": "lte" };
  const OP_LABELS = { eq: "=", ne: "≠", gt: ">", gte: "≥", lt: "<", lte: "≤",
    between: "between", in: "is one of", not_in: "is none of", has: "has", not_has: "has not",
    has_any: "has any of", has_all: "has all of", member_of: "member of group",
    not_member_of: "not member of group", contains_any: "contains any of" };
  const SUGGEST = { tag: "tags", tier: "tier", language: "language", platform: "platform",
                    group: "group", birthday_month: "birthday_month" };
  const NUMERIC = new Set(["number", "int", "month"]);

  const combine = $("combine");
  const list = $("conditions");
  const json = $("rule-json");
  const jsonBox = $("json-box");
  const formState = $("form-state");
  const panel = document.querySelector(".live-count");
  const error = $("rule-error");
  let formUsable = true;

  // ------------------------------------------------------------------ suggestions
  for (const [field, key] of Object.entries(SUGGEST)) {
    const items = OPTIONS[key] || [];
    if (!items.length) continue;
    document.body.append(Kz.el("datalist", { id: "opt-" + field },
      items.map((v) => typeof v === "object"
        ? Kz.el("option", { value: String(v.id), label: v.title })
        : Kz.el("option", { value: String(v) }))));
  }

  // ------------------------------------------------------------------ the form
  function placeholder(spec, op) {
    if (op === "between") return "low, high";
    const one = spec.kind === "month" ? "1-12" : NUMERIC.has(spec.kind) ? "number" : "text";
    return LIST_OPS.has(op) ? one + ", " + one + ", …" : one;
  }

  function valueControl(field, op, value) {
    const spec = FIELDS[field];
    if (spec.kind === "bool") {
      return Kz.el("select", { class: "value", "aria-label": "Value" },
        ["true", "false"].map((v) => Kz.el("option", { value: v, selected: v === value }, v)));
    }
    return Kz.el("input", { class: "value", "aria-label": "Value", value: value || "",
                            list: SUGGEST[field] && OPTIONS[SUGGEST[field]] ? "opt-" + field : null,
                            placeholder: placeholder(spec, op) });
  }

  function conditionRow(cond) {
    const spec = FIELDS[cond.field];
    const li = Kz.el("li", {});
    const negate = Kz.el("input", { type: "checkbox", class: "negate", checked: !!cond.negate });
    const field = Kz.el("select", { class: "field", "aria-label": "Field" },
      Object.keys(FIELDS).map((f) => Kz.el("option", { value: f, selected: f === cond.field }, f)));
    const op = Kz.el("select", { class: "op", "aria-label": "Operator" },
      spec.ops.map((o) => Kz.el("option", { value: o, selected: o === cond.op },
                                OP_LABELS[o] || o)));
    const value = valueControl(cond.field, cond.op, cond.value);
    const days = Kz.el("input", { class: "days", type: "number", min: "1", step: "any",
                                  "aria-label": "Within the last N days (empty: ever)",
                                  placeholder: "any time", value: cond.within || "" });
    const within = Kz.el("label", { class: "within", hidden: !spec.within_days,
                                    title: "Only count the last N days (empty: ever)" },
                         "within", days, "days");
    const remove = Kz.el("button", { type: "button", class: "small danger",
                                     "aria-label": "Remove condition" }, "×");
    const help = Kz.el("span", { class: "help" }, spec.help);
    li.append(Kz.el("label", { class: "not", title: "Members NOT matching this" }, negate, "not"),
              field, op, value, within, remove, help);

    field.addEventListener("change", () => {
      const f = field.value;
      const s = FIELDS[f];
      li.replaceWith(conditionRow({ field: f, op: s.ops[0], value: "",
                                    within: s.within_days ? days.value : "",
                                    negate: negate.checked }));
      fromForm();
    });
    op.addEventListener("change", () => {
      const current = li.querySelector(".value");
      if (current.tagName === "INPUT") current.placeholder = placeholder(FIELDS[field.value], op.value);
      fromForm();
    });
    remove.addEventListener("click", () => { li.remove(); fromForm(); });
    return li;
  }

  function split(raw) { return raw.split(",").map((v) => v.trim()).filter(Boolean); }

  function scalar(spec, raw) {
    if (NUMERIC.has(spec.kind)) {
      const n = Number(raw);
      return raw !== "" && !Number.isNaN(n) ? n : raw;  // let the server name a bad number
    }
    return raw;
  }

  function readRow(li) {
    const field = li.querySelector(".field").value;
    const spec = FIELDS[field];
    const op = li.querySelector(".op").value;
    const raw = li.querySelector(".value").value.trim();
    let value;
    if (spec.kind === "bool") value = raw === "true";
    else if (op === "between") value = split(raw).map((v) => scalar({ kind: "number" }, v));
    else if (LIST_OPS.has(op)) value = split(raw).map((v) => scalar(spec, v));
    else value = scalar(spec, raw);
    const rule = { field, op, value };
    const days = li.querySelector(".days").value.trim();
    if (spec.within_days && days) rule.within_days = scalar({ kind: "number" }, days);
    return li.querySelector(".negate").checked ? { not: rule } : rule;
  }

  function formRule() {
    return { [combine.value]: [...list.children].map(readRow) };
  }

  // The form can show a flat all/any of conditions (each maybe negated); anything deeper is
  // edited as JSON.
  function asRow(item) {
    const negate = item && typeof item === "object" && Object.keys(item).length === 1 &&
      "not" in item;
    const cond = negate ? item.not : item;
    if (!cond || typeof cond !== "object" || Array.isArray(cond)) return null;
    if (!Object.keys(cond).every((k) => ["field", "op", "value", "within_days"].includes(k))) {
      return null;
    }
    const spec = FIELDS[cond.field];
    const op = ALIASES[cond.op] || cond.op;
    if (!spec || !spec.ops.includes(op)) return null;
    const v = cond.value;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) return null;
    if (Array.isArray(v) && v.some((x) => x !== null && typeof x === "object")) return null;
    return { field: cond.field, op, negate,
             value: Array.isArray(v) ? v.join(", ") : v === undefined ? "" : String(v),
             within: cond.within_days === undefined ? "" : String(cond.within_days) };
  }

  function toModel(rule) {
    if (!rule || typeof rule !== "object" || Array.isArray(rule)) return null;
    const keys = Object.keys(rule);
    if (keys.length === 1 && (keys[0] === "all" || keys[0] === "any") &&
        Array.isArray(rule[keys[0]])) {
      const rows = rule[keys[0]].map(asRow);
      return rows.every(Boolean) ? { combine: keys[0], rows } : null;
    }
    const one = asRow(rule);
    return one ? { combine: "all", rows: [one] } : null;
  }

  function setFormUsable(usable) {
    formUsable = usable;
    list.hidden = !usable;
    combine.disabled = !usable;
    $("add-condition").disabled = !usable;
    formState.textContent = usable ? "" : "This rule is edited as JSON (nested groups or " +
      "values the form does not show).";
    if (!usable) jsonBox.open = true;
  }

  // form -> JSON
  function fromForm() {
    json.value = JSON.stringify(formRule(), null, 2);
    json.classList.remove("bad");
    countSoon();
  }

  // JSON -> form (when the form can show it)
  function fromJson() {
    let parsed;
    try { parsed = JSON.parse(json.value); } catch (e) {
      json.classList.add("bad");
      countSoon();  // the server names the place of the syntax error
      return;
    }
    json.classList.remove("bad");
    const model = toModel(parsed);
    if (model) {
      combine.value = model.combine;
      list.replaceChildren(...model.rows.map(conditionRow));
    }
    setFormUsable(!!model);
    countSoon();
  }

  combine.addEventListener("change", fromForm);
  list.addEventListener("input", (ev) => { if (ev.target.matches(".value, .days")) fromForm(); });
  list.addEventListener("change", (ev) => {
    if (ev.target.matches(".negate, select.value")) fromForm();
  });
  $("add-condition").addEventListener("click", () => {
    const field = "tag";
    const row = conditionRow({ field, op: FIELDS[field].ops[0], value: "", within: "" });
    list.append(row);
    fromForm();
    row.querySelector(".value").focus();
  });
  json.addEventListener("input", fromJson);

  // ------------------------------------------------------------------ live count
  let countSeq = 0;
  const money = (v) => "¥" + Math.round(v || 0).toLocaleString();

  async function runCount() {
    const mine = ++countSeq;
    panel.classList.add("busy");
    const started = performance.now();
    try {
      const d = await Kz.api("POST", "/api/crm/segments/count", { definition: json.value });
      if (mine !== countSeq) return;
      error.hidden = true;
      $("count-matching").textContent = d.matching.toLocaleString();
      $("count-marketable").textContent = d.marketable.toLocaleString();
      $("count-time").textContent = "Counted in " + d.ms + " ms" +
        (d.sample.length ? ", sample in " + d.sample_ms + " ms" : "") + " on the server; " +
        Math.round(performance.now() - started) + " ms round trip.";
      $("rule-text").textContent = d.describe;
      $("sample").replaceChildren(...d.sample.map((m) => Kz.el("tr", {},
        Kz.el("td", {}, Kz.el("a", { href: Kz.prefix + "/crm/members/" + m.contact_id },
                              m.display_name || "Member #" + m.contact_id)),
        Kz.el("td", {}, Kz.el("span", { class: "tier tier-" + m.tier }, m.tier)),
        Kz.el("td", { class: "num" }, money(m.total_spend)),
        Kz.el("td", { class: "num" }, Math.round(m.koc_score)))));
    } catch (e) {
      if (mine !== countSeq) return;
      if (e.status === 400) {
        error.textContent = e.message;
        error.hidden = false;
        $("count-matching").textContent = "—";
        $("count-marketable").textContent = "—";
        $("count-time").textContent = "";
        $("rule-text").textContent = "";
        $("sample").replaceChildren();
      } else Kz.fail(e);
    } finally {
      if (mine === countSeq) panel.classList.remove("busy");
    }
  }
  const countSoon = Kz.debounce(runCount, 400);

  // ------------------------------------------------------------------ saved segments
  const saved = $("saved");

  function savedRow(s) {
    return Kz.el("tr", { dataset: { id: s.id, name: s.name, description: s.description || "",
                                    definition: JSON.stringify(s.definition) } },
      Kz.el("td", {}, Kz.el("strong", {}, s.name), Kz.el("br"),
            Kz.el("small", {}, s.description || "")),
      Kz.el("td", { class: "rule" }, s.describe),
      Kz.el("td", { class: "num count" }, "…"),
      Kz.el("td", { class: "num marketable" }, "…"),
      Kz.el("td", { class: "actions" },
        Kz.el("button", { type: "button", class: "small edit" }, "Edit"), " ",
        Kz.el("button", { type: "button", class: "small danger delete" }, "Delete")));
  }

  async function loadCounts() {
    for (const tr of saved.querySelectorAll("tr[data-id]")) {
      try {
        const d = await Kz.api("GET", "/api/crm/segments/" + tr.dataset.id + "/count");
        tr.querySelector(".count").textContent = d.matching.toLocaleString();
        tr.querySelector(".count").title = d.ms + " ms";
        tr.querySelector(".marketable").textContent = d.marketable.toLocaleString();
        tr.classList.add("loaded");
      } catch (e) {
        tr.querySelector(".count").textContent = "error";
        tr.querySelector(".count").title = e.message;
      }
    }
  }

  async function refreshList() {
    try {
      const data = await Kz.api("GET", "/api/crm/segments");
      if (!data.segments.length) {
        saved.replaceChildren(Kz.el("tr", { class: "empty" },
          Kz.el("td", { colspan: "5", class: "muted" }, "No saved segments yet.")));
        return;
      }
      saved.replaceChildren(...data.segments.map(savedRow));
      loadCounts();
    } catch (e) { Kz.fail(e); }
  }

  saved.addEventListener("click", async (ev) => {
    const tr = ev.target.closest("tr[data-id]");
    if (!tr) return;
    if (ev.target.closest("button.edit")) {
      json.value = JSON.stringify(JSON.parse(tr.dataset.definition), null, 2);
      $("seg-name").value = tr.dataset.name;
      $("seg-description").value = tr.dataset.description || "";
      fromJson();
      window.scrollTo({ top: 0, behavior: "smooth" });
    } else if (ev.target.closest("button.delete")) {
      if (!confirm("Delete the segment “" + tr.dataset.name + "”? Drops that use it by " +
                   "name will not find it any more.")) return;
      try {
        await Kz.api("DELETE", "/api/crm/segments/" + tr.dataset.id);
        Kz.toast("Segment deleted");
        refreshList();
      } catch (e) { Kz.fail(e); }
    }
  });

  $("save-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: $("seg-name").value.trim(), definition: json.value,
                   description: $("seg-description").value.trim() };
    try {
      try {
        await Kz.api("POST", "/api/crm/segments", body);
      } catch (e) {
        if (e.status !== 400 || !/ exists/.test(e.message)) throw e;
        if (!confirm("A segment named “" + body.name + "” exists. Replace its rule?")) return;
        await Kz.api("POST", "/api/crm/segments", Object.assign(body, { replace: true }));
      }
      Kz.toast("Segment saved");
      refreshList();
    } catch (e) { Kz.fail(e); }
  });

  fromJson();
  loadCounts();
})();

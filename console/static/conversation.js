// One conversation: transcript (live), reply box with canned responses, agent assist and a
// photo, notes, take / transfer / resolve, retry of a failed reply.
// Every transcript entry has a key ("m:<message id>" or "n:<note id>"): an entry is drawn once
// however it arrives (our own send, the live event, a reload).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const { api, el, clock, fail, toast, debounce, live, prefix } = window.Kz;
  const cid = Number(document.body.dataset.conversationId);
  const base = "/api/conversations/" + cid;
  const list = document.getElementById("transcript");
  const text = document.getElementById("reply-text");
  const image = document.getElementById("reply-image");
  const hint = document.getElementById("reply-hint");
  const sendButton = document.getElementById("send");
  const nodes = new Map();  // key -> <li>
  let data = null;

  // ------------------------------------------------------------------ transcript
  function label(item) {
    if (item.kind === "note") return "Note · " + (item.sender || "advisor");
    if (item.kind === "in") return (data && data.view.customer) || "Customer";
    if (item.author === "bot") return "Bot";
    return item.sender || "Advisor";
  }

  function draw(item) {
    const classes = ["msg", item.kind];
    if (item.author === "bot") classes.push("bot");
    if (item.status === "failed") classes.push("failed");
    const parts = [
      el("span", { class: "who" }, label(item),
        el("span", { class: "when", title: item.at }, clock(item.at))),
    ];
    if (item.image) parts.push(el("span", { class: "photo" }, "[photo]"));
    if (item.text) parts.push(el("span", { class: "text" }, item.text));
    if (item.kind === "out" && item.author === "advisor") {
      parts.push(el("span", { class: "status", title: item.error || "" }, item.status || ""));
      if (item.retryable) {
        parts.push(el("button", { type: "button", class: "small retry",
                                  onclick: () => retry(item.id) }, "Retry"));
      }
    }
    const node = el("li", { class: classes.join(" "), dataset: { key: item.key } }, parts);
    node._item = item;
    return node;
  }

  function same(a, b) {
    return a.text === b.text && a.status === b.status && a.retryable === b.retryable &&
      a.sender === b.sender && a.error === b.error;
  }

  // Put one entry in place (new, or changed status); keeps everything else as it is.
  function upsert(item) {
    const old = nodes.get(item.key);
    const node = old && same(old._item, item) ? old : draw(item);
    if (old && old !== node) old.replaceWith(node);
    else if (!old) list.append(node);
    nodes.set(item.key, node);
    return node;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function drawTranscript(items) {
    const follow = nearBottom();
    const keep = new Set();
    const ordered = items.map((item) => {
      keep.add(item.key);
      const old = nodes.get(item.key);
      const node = old && same(old._item, item) ? old : draw(item);
      nodes.set(item.key, node);
      return node;
    });
    for (const key of [...nodes.keys()]) if (!keep.has(key)) nodes.delete(key);
    list.replaceChildren(...ordered);
    if (follow) list.scrollTop = list.scrollHeight;
  }

  // ------------------------------------------------------------------ header and actions
  function drawHead() {
    const v = data.view;
    const status = document.getElementById("status");
    status.textContent = v.status;
    status.className = "badge " + v.status;
    document.getElementById("assignee").textContent = v.advisor ? "· " + v.advisor : "";
    document.getElementById("claim").hidden = !data.may_claim;
    document.getElementById("resolve").hidden = !data.may_resolve;
    document.getElementById("transfer-box").hidden = !data.may_transfer;
    sendButton.disabled = !data.may_reply;
    hint.hidden = data.may_reply;
    if (!data.may_reply) {
      hint.textContent = v.status === "resolved" ? "This conversation is resolved."
        : "Take the conversation to reply.";
    }
  }

  async function load() {
    try {
      data = await api("GET", base);
    } catch (e) {
      if (e.status === 403 || e.status === 404) {
        toast("This conversation is no longer yours");
        setTimeout(() => { location.href = prefix + "/"; }, 1200);
        return;
      }
      fail(e);
      return;
    }
    drawHead();
    drawTranscript(data.transcript);
  }

  async function act(method, path, body) {
    try {
      const result = await api(method, path, body);
      await load();
      return result;
    } catch (e) { fail(e); return null; }
  }

  async function retry(messageId) {
    const result = await act("POST", "/api/messages/" + messageId + "/retry");
    if (result) toast(result.ok ? "Sent" : "Still failing: " + (result.error || ""), !result.ok);
  }

  document.getElementById("claim").addEventListener("click", () => act("POST", base + "/claim"));
  document.getElementById("resolve").addEventListener("click", async () => {
    if (!confirm("Resolve this conversation? The customer will be asked for a rating.")) return;
    if (await act("POST", base + "/resolve")) toast("Resolved");
  });
  document.getElementById("transfer").addEventListener("click", async () => {
    const value = document.getElementById("transfer-to").value;
    const to = value === "queue" ? null : Number(value);
    if (await act("POST", base + "/transfer", { to })) toast("Transferred");
  });

  // ------------------------------------------------------------------ reply box
  function insert(value) {
    const start = text.selectionStart ?? text.value.length;
    const end = text.selectionEnd ?? text.value.length;
    if (!text.value.trim()) text.value = value;
    else text.value = text.value.slice(0, start) + value + text.value.slice(end);
    text.focus();
  }

  const canned = document.getElementById("canned");
  canned.addEventListener("change", () => {
    const option = canned.selectedOptions[0];
    if (option && option.dataset.text) insert(option.dataset.text);
    canned.value = "";
  });

  async function send() {
    const body = text.value.trim();
    const file = image.files && image.files[0];
    if (!body && !file) { toast("Write a reply first", true); return; }
    if (file && file.size > Number(image.dataset.max)) {
      toast("The photo is too large", true);
      return;
    }
    let payload = { text: body };
    if (file) {
      payload = new FormData();
      payload.append("text", body);
      payload.append("image", file);
    }
    sendButton.disabled = true;
    try {
      const result = await api("POST", base + "/reply", payload);
      if (result.message_id !== null) {
        upsert({ key: "m:" + result.message_id, id: result.message_id, kind: "out",
                 author: "advisor", text: body, image: file ? {} : null,
                 sender: data ? data.me.display_name : "", status: result.status,
                 error: result.error, retryable: !result.ok, at: new Date().toISOString() });
        list.scrollTop = list.scrollHeight;
      }
      if (result.ok) {
        text.value = "";
        image.value = "";
      } else {
        toast("Not delivered: " + (result.error || "failed") + " — use Retry", true);
        text.value = "";
        image.value = "";
      }
      await load();
    } catch (e) { fail(e); } finally {
      sendButton.disabled = !(data && data.may_reply);
    }
  }

  document.getElementById("reply-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    send();
  });
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
  });

  document.getElementById("note-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = document.getElementById("note-text");
    if (!note.value.trim()) return;
    if (await act("POST", base + "/notes", { text: note.value })) note.value = "";
  });

  // ------------------------------------------------------------------ agent assist
  async function suggest(query) {
    const box = document.getElementById("suggestions");
    const path = base + "/suggestions" + (query ? "?q=" + encodeURIComponent(query) : "");
    let found;
    try {
      const result = await api("GET", path);
      found = result.suggestions;
      document.getElementById("assist-question").textContent =
        result.question ? "For: “" + result.question + "”" : "";
    } catch (e) {
      box.replaceChildren(el("li", { class: "muted" }, "Suggestions are unavailable."));
      return;
    }
    if (!found.length) {
      box.replaceChildren(el("li", { class: "muted" }, "No suggested answers."));
      return;
    }
    box.replaceChildren(...found.map((s) => el("li", { dataset: { key: s.key } },
      el("div", { class: "q" }, s.question),
      el("div", { class: "a" }, s.answer),
      el("div", { class: "row" },
        el("span", { class: "conf" }, Math.round(s.confidence * 100) + "% match"),
        el("button", { type: "button", class: "small insert", onclick: () => {
          insert(s.answer);
          toast("Inserted — edit it, then Send");
        } }, "Insert")))));
  }

  document.getElementById("assist-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    suggest(document.getElementById("assist-q").value.trim());
  });

  // ------------------------------------------------------------------ live
  const reload = debounce(load, 120);
  const resuggest = debounce(() => suggest(), 400);
  live((event) => {
    if (event.conversation_id !== cid) return;
    reload();
    if (event.type === "message" && event.direction === "in") resuggest();
  }, load);
  load().then(() => suggest());
});

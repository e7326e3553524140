/* Kizuna web chat page. Plain JS, no build step, no dependencies.
 *
 * Every piece of text that comes from the server or the visitor is put into the page with
 * textContent / createTextNode, never innerHTML. Links and images are accepted only with safe
 * schemes. Protocol: see bot/webchat/platform.py.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("kizuna-config").textContent);

  const STRINGS = {
    ja: {
      placeholder: "メッセージを入力…",
      send: "送信",
      connecting: "接続中…",
      reconnecting: "再接続中…",
      online: "オンライン",
      empty: "ご質問やご相談をどうぞ。担当者がお答えします。",
      failed: "送信できませんでした",
      close: "閉じる",
      rate_limited: "送信が多すぎます。少し待ってからお試しください。",
      text_too_long: "メッセージが長すぎます。",
      error: "エラーが発生しました。",
    },
    en: {
      placeholder: "Type a message…",
      send: "Send",
      connecting: "Connecting…",
      reconnecting: "Reconnecting…",
      online: "Online",
      empty: "Ask us anything — we're here to help.",
      failed: "Not sent",
      close: "Close",
      rate_limited: "You're sending too fast. Please wait a moment.",
      text_too_long: "That message is too long.",
      error: "Something went wrong.",
    },
    zh: {
      placeholder: "输入消息…",
      send: "发送",
      connecting: "正在连接…",
      reconnecting: "正在重新连接…",
      online: "在线",
      empty: "有任何问题都可以问我们。",
      failed: "发送失败",
      close: "关闭",
      rate_limited: "发送过于频繁，请稍后再试。",
      text_too_long: "消息太长了。",
      error: "出错了。",
    },
  };

  function pickLanguage() {
    const wanted = (navigator.languages && navigator.languages.length
      ? navigator.languages : [navigator.language || ""]).concat([config.defaultLanguage, "en"]);
    for (const tag of wanted) {
      const base = String(tag || "").toLowerCase().split(/[-_]/)[0];
      if (STRINGS[base]) return base;
    }
    return "en";
  }

  const lang = pickLanguage();
  const S = STRINGS[lang];
  const embedded = window.parent !== window;

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const input = $("input");
  const sendButton = $("send");
  const form = $("composer");
  const typing = $("typing");
  const toastBox = $("toast");
  const empty = $("empty");
  const dot = $("dot");
  const statusText = $("status-text");
  const closeButton = $("close");

  document.documentElement.lang = lang;
  input.placeholder = S.placeholder;
  input.maxLength = config.maxText;
  input.setAttribute("aria-label", S.placeholder);
  sendButton.textContent = S.send;
  empty.textContent = S.empty;
  $("avatar").textContent = Array.from(config.brand || "K")[0].toUpperCase();
  if (embedded) {
    closeButton.hidden = false;
    closeButton.setAttribute("aria-label", S.close);
    closeButton.title = S.close;
    closeButton.addEventListener("click", () => window.parent.postMessage({ type: "kizuna:close" }, "*"));
  }

  // ---- state ---------------------------------------------------------------------------------
  let ws = null;
  let ready = false;
  let attempt = 0;
  let retryTimer = null;
  let typingTimer = null;
  let toastTimer = null;
  const seen = new Set(); // message ids on screen
  const pending = new Map(); // client_id -> row of a visitor message awaiting its ack
  const pendingButtons = new Map(); // client_id or callback_id -> pressed button

  // ---- helpers -------------------------------------------------------------------------------
  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function newClientId() {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    return "c" + Date.now().toString(36) + random[0].toString(36) + random[1].toString(36);
  }

  function safeUrl(url, kinds) {
    if (typeof url !== "string" || url.length > 2048) return null;
    if (kinds.includes("data") && /^data:image\/(png|jpeg|gif|webp);base64,/i.test(url)) return url;
    try {
      const parsed = new URL(url, location.href);
      const scheme = parsed.protocol.replace(":", "");
      return kinds.includes(scheme) ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function scrollToEnd() {
    log.scrollTop = log.scrollHeight;
  }

  function formatTime(ts) {
    const date = typeof ts === "number" ? new Date(ts * 1000) : new Date();
    try {
      return date.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
    } catch (e) {
      return "";
    }
  }

  const URL_RE = /https?:\/\/[^\s<>"'「」（）【】]+/g;

  /** Append text to node, turning http(s) links into anchors; never parses HTML. */
  function appendLinkified(node, text) {
    let last = 0;
    for (const match of text.matchAll(URL_RE)) {
      let href = match[0];
      const trailing = /[.,!?;:)\]。、！？]+$/.exec(href);
      if (trailing) href = href.slice(0, -trailing[0].length);
      const start = match.index;
      if (start > last) node.appendChild(document.createTextNode(text.slice(last, start)));
      const safe = safeUrl(href, ["http", "https"]);
      if (safe) {
        const a = el("a");
        a.href = safe;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.textContent = href;
        node.appendChild(a);
      } else {
        node.appendChild(document.createTextNode(href));
      }
      last = start + href.length;
    }
    if (last < text.length) node.appendChild(document.createTextNode(text.slice(last)));
  }

  // Telegram's HTML subset, for messages the core marks format "html". The markup is parsed into
  // an inert document (no scripts run, nothing loads) and only these tags are rebuilt, with
  // createElement and text nodes; any other element is unwrapped, scripts and styles dropped.
  const HTML_TAGS = {
    B: "b", STRONG: "strong", I: "i", EM: "em", U: "u", INS: "ins", S: "s", STRIKE: "s",
    DEL: "del", CODE: "code", PRE: "pre", BLOCKQUOTE: "blockquote", BR: "br", A: "a",
  };
  const DROPPED_TAGS = new Set(["SCRIPT", "STYLE", "TEMPLATE", "NOSCRIPT", "IFRAME", "OBJECT"]);

  function appendHtml(node, source) {
    let doc;
    try {
      doc = new DOMParser().parseFromString(source, "text/html");
    } catch (e) {
      node.appendChild(document.createTextNode(source));
      return;
    }
    copySafe(doc.body, node, 0, false);
  }

  function copySafe(from, to, depth, inLink) {
    for (const child of Array.from(from.childNodes)) {
      if (child.nodeType === Node.TEXT_NODE) {
        if (inLink) to.appendChild(document.createTextNode(child.nodeValue));
        else appendLinkified(to, child.nodeValue);
        continue;
      }
      if (child.nodeType !== Node.ELEMENT_NODE || DROPPED_TAGS.has(child.tagName)) continue;
      const tag = HTML_TAGS[child.tagName];
      if (depth > 16) {
        to.appendChild(document.createTextNode(child.textContent || ""));
      } else if (!tag) {
        copySafe(child, to, depth + 1, inLink);
      } else if (tag === "a") {
        const href = safeUrl(child.getAttribute("href"), ["http", "https", "mailto", "tel"]);
        const out = el(href && !inLink ? "a" : "span");
        if (href && !inLink) {
          out.href = href;
          out.target = "_blank";
          out.rel = "noopener noreferrer";
        }
        copySafe(child, out, depth + 1, true);
        to.appendChild(out);
      } else {
        const out = el(tag);
        copySafe(child, out, depth + 1, inLink);
        to.appendChild(out);
      }
    }
  }

  function senderKind(sender) {
    if (sender === "visitor") return "visitor";
    if (typeof sender === "string" && sender.startsWith("advisor:")) return "advisor";
    return "bot";
  }

  function toast(text) {
    toastBox.textContent = text;
    toastBox.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);
  }

  function showTyping() {
    typing.hidden = false;
    const stick = nearBottom();
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 20000);
    if (stick) scrollToEnd();
  }

  function hideTyping() {
    typing.hidden = true;
    clearTimeout(typingTimer);
  }

  function setStatus(state) {
    dot.className = "dot" + (state === "online" ? " on" : " busy");
    statusText.textContent = S[state];
    updateSendButton();
  }

  function updateSendButton() {
    sendButton.disabled = !ready || !input.value.trim();
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 140) + "px";
  }

  function errorText(code) {
    return S[code] || S.error;
  }

  // ---- rendering -----------------------------------------------------------------------------
  function metaLine(row, ts) {
    const meta = el("div", "meta");
    meta.textContent = formatTime(ts);
    row.appendChild(meta);
    return meta;
  }

  function renderKeyboard(message) {
    const keyboard = el("div", "keyboard");
    for (const buttons of Array.isArray(message.buttons) ? message.buttons : []) {
      if (!Array.isArray(buttons)) continue;
      const kbRow = el("div", "kb-row");
      for (const button of buttons) {
        if (!button || typeof button.text !== "string") continue;
        if (typeof button.callback_data === "string") {
          const b = el("button", "kb-btn");
          b.type = "button";
          b.dir = "auto";
          b.textContent = button.text;
          b.addEventListener("click", () => pressButton(message, button, b));
          kbRow.appendChild(b);
        } else {
          const href = safeUrl(button.url, ["http", "https", "mailto", "tel"]);
          if (!href) continue;
          const a = el("a", "kb-btn");
          a.href = href;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          a.dir = "auto";
          a.textContent = button.text;
          kbRow.appendChild(a);
        }
      }
      if (kbRow.childNodes.length) keyboard.appendChild(kbRow);
    }
    return keyboard.childNodes.length ? keyboard : null;
  }

  function renderMessage(message, live) {
    if (!message || message.id === undefined || message.id === null) return;
    const id = String(message.id);
    if (seen.has(id)) return;
    if (message.client_id && pending.has(message.client_id)) {
      confirmOwn(message.client_id, id, message.ts); // our own echo arrived before its ack
      return;
    }
    seen.add(id);
    empty.hidden = true;
    const stick = nearBottom() || !live;
    const kind = senderKind(message.sender);
    const row = el("div", "row " + kind);
    row.dataset.id = id;
    if (kind === "advisor") {
      const who = el("div", "who");
      who.dir = "auto";
      who.textContent = message.sender.slice("advisor:".length);
      row.appendChild(who);
    }
    const bubble = el("div", "bubble");
    const src = message.image && safeUrl(message.image.url, ["http", "https", "data"]);
    if (src) {
      const img = el("img");
      img.alt = "";
      img.loading = "lazy";
      img.referrerPolicy = "no-referrer";
      img.addEventListener("load", () => { if (stick) scrollToEnd(); });
      img.src = src;
      bubble.appendChild(img);
    }
    if (typeof message.text === "string" && message.text) {
      const text = el("div", "text");
      text.dir = "auto";
      if (message.format === "html") appendHtml(text, message.text);
      else appendLinkified(text, message.text);
      bubble.appendChild(text);
    }
    if (bubble.childNodes.length) row.appendChild(bubble);
    const keyboard = renderKeyboard(message);
    if (keyboard) row.appendChild(keyboard);
    metaLine(row, message.ts);
    log.appendChild(row);
    if (kind !== "visitor" && live) {
      hideTyping();
      if (embedded) window.parent.postMessage({ type: "kizuna:message" }, "*");
    }
    if (stick) scrollToEnd();
  }

  function renderOwn(text, clientId) {
    empty.hidden = true;
    const row = el("div", "row visitor pending");
    const bubble = el("div", "bubble");
    const body = el("div", "text");
    body.dir = "auto";
    appendLinkified(body, text);
    bubble.appendChild(body);
    row.appendChild(bubble);
    metaLine(row, null);
    log.appendChild(row);
    pending.set(clientId, row);
    scrollToEnd();
  }

  function confirmOwn(clientId, id, ts) {
    const row = pending.get(clientId);
    pending.delete(clientId);
    if (!row) return;
    seen.add(String(id));
    row.dataset.id = String(id);
    row.classList.remove("pending");
    const meta = row.querySelector(".meta");
    if (meta) meta.textContent = formatTime(ts);
  }

  function failOwn(clientId, code) {
    const row = pending.get(clientId);
    pending.delete(clientId);
    if (!row) return;
    row.classList.remove("pending");
    row.classList.add("failed");
    const meta = row.querySelector(".meta");
    if (meta) meta.textContent = S.failed + (code && S[code] ? " — " + S[code] : "");
  }

  // ---- protocol ------------------------------------------------------------------------------
  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function pressButton(message, button, node) {
    if (!ready || node.classList.contains("pressed")) return;
    const clientId = newClientId();
    const frame = {
      type: "callback",
      data: button.callback_data,
      message_id: String(message.id),
      sig: button.sig,
      client_id: clientId,
    };
    if (!send(frame)) return;
    node.classList.add("pressed");
    pendingButtons.set(clientId, node);
    setTimeout(() => { // the core did not answer: let the visitor press again
      node.classList.remove("pressed");
      for (const [key, value] of pendingButtons) if (value === node) pendingButtons.delete(key);
    }, 15000);
  }

  function releaseButton(key) {
    const node = pendingButtons.get(key);
    pendingButtons.delete(key);
    if (node) node.classList.remove("pressed");
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case "history": {
        // The history is the source of truth (after a reconnect too): redraw from it, keeping
        // only the visitor's unsent messages at the end so they can be retyped.
        const unsent = Array.from(log.querySelectorAll(".row.failed"));
        for (const row of Array.from(log.querySelectorAll(".row"))) row.remove();
        seen.clear();
        for (const message of Array.isArray(frame.messages) ? frame.messages : []) {
          renderMessage(message, false);
        }
        for (const row of unsent) log.appendChild(row);
        empty.hidden = log.querySelector(".row") !== null;
        ready = true;
        attempt = 0;
        setStatus("online");
        scrollToEnd();
        break;
      }
      case "message":
        renderMessage(frame, true);
        break;
      case "ack":
        if (pending.has(frame.client_id)) {
          confirmOwn(frame.client_id, frame.id, frame.ts);
          showTyping();
        } else if (pendingButtons.has(frame.client_id)) {
          const node = pendingButtons.get(frame.client_id);
          pendingButtons.delete(frame.client_id);
          pendingButtons.set("cb:" + frame.id, node);
          showTyping();
        }
        break;
      case "callback_answer":
        releaseButton("cb:" + frame.callback_id);
        if (typeof frame.text === "string" && frame.text) toast(frame.text);
        break;
      case "error":
        if (frame.client_id && pending.has(frame.client_id)) {
          failOwn(frame.client_id, frame.code);
        } else {
          if (frame.client_id) releaseButton(frame.client_id);
          toast(errorText(frame.code));
        }
        break;
      default:
        break; // newer server, older page: ignore what we do not know
    }
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    setStatus(attempt ? "reconnecting" : "connecting");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let socket;
    try {
      socket = new WebSocket(scheme + location.host + config.prefix + "/ws");
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "hello", language: navigator.language || lang }));
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    });
    socket.addEventListener("close", () => {
      if (ws !== socket) return;
      ws = null;
      ready = false;
      hideTyping();
      for (const clientId of Array.from(pending.keys())) failOwn(clientId, null);
      for (const key of Array.from(pendingButtons.keys())) releaseButton(key);
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    attempt += 1;
    setStatus("reconnecting");
    // Exponential backoff with jitter: 0.5 s, 1 s, 2 s... capped at 30 s.
    const ceiling = Math.min(30000, 500 * Math.pow(2, Math.min(attempt - 1, 10)));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (ws || retryTimer === null) return;
    attempt = Math.min(attempt, 1);
    connect();
  }

  // ---- composer ------------------------------------------------------------------------------
  function submit() {
    const text = input.value;
    if (!ready || !text.trim()) return;
    if (text.length > config.maxText) {
      toast(S.text_too_long);
      return;
    }
    const clientId = newClientId();
    if (!send({ type: "message", text: text, client_id: clientId })) return;
    renderOwn(text, clientId);
    input.value = "";
    autosize();
    updateSendButton();
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });

  const touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  input.addEventListener("keydown", (event) => {
    // Enter sends on desktop; never while an IME (Japanese, Chinese input) is composing.
    if (event.key === "Enter" && !event.shiftKey && !touch && !event.isComposing &&
        event.keyCode !== 229) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && embedded) {
      window.parent.postMessage({ type: "kizuna:close" }, "*");
    }
  });
  input.addEventListener("input", () => {
    autosize();
    updateSendButton();
  });

  window.addEventListener("message", (event) => {
    if (event.source !== window.parent || !event.data || event.data.type !== "kizuna:focus") return;
    input.focus();
  });
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });

  connect();
})();

// Kizuna console: shared helpers (API calls with the CSRF token, the live socket, DOM building
// without innerHTML, the shift switch). Page scripts use window.Kz.
"use strict";
(function () {
  const body = document.body;
  const prefix = body.dataset.prefix || "/console";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : "";

  // el("li", {class: "x", dataset: {id: 1}, onclick: f}, "text", child) -- text is never HTML
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // JSON in, JSON out; a FormData body goes as multipart. 401 -> back to the login page.
  async function api(method, path, data) {
    const init = { method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (data instanceof FormData) init.body = data;
    else if (data !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(data);
    }
    const response = await fetch(prefix + path, init);
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    if (response.status === 401) {
      location.href = prefix + "/login?next=" + encodeURIComponent(location.pathname);
      throw new ApiError(401, "please sign in");
    }
    if (!response.ok) {
      throw new ApiError(response.status, (payload && payload.error) || response.statusText);
    }
    return payload;
  }

  let toastTimer = null;
  function toast(message, bad) {
    const node = document.getElementById("toast");
    if (!node) return;
    node.textContent = message;
    node.className = "show" + (bad ? " bad" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.className = ""; }, bad ? 6000 : 2500);
  }

  function fail(error) {
    toast(error && error.message ? error.message : String(error), true);
  }

  function ago(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return "just now";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    return Math.floor(seconds / 86400) + " d ago";
  }

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit",
                                  minute: "2-digit" });
  }

  // Run fn at most once per `ms` (the last call wins): many events, one refresh.
  function debounce(fn, ms) {
    let timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  // The live socket: calls onEvent(event) for each inbox event this advisor may see, and
  // onReady() after every (re)connection so the page can reload what it may have missed.
  function live(onEvent, onReady) {
    const state = document.getElementById("live-state");
    let delay = 500;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(scheme + location.host + prefix + "/ws");
      ws.addEventListener("message", (msg) => {
        let event;
        try { event = JSON.parse(msg.data); } catch (e) { return; }
        if (event.type === "ready") {
          delay = 500;
          if (state) state.dataset.state = "on";
          if (onReady) onReady();
          return;
        }
        if (event.type === "shift" && event.advisor_id === Number(body.dataset.advisorId)) {
          setShift(event.on_shift);
        }
        onEvent(event);
      });
      ws.addEventListener("close", (ev) => {
        if (state) state.dataset.state = "off";
        if (ev.code === 4401) {  // the session ended
          location.href = prefix + "/login";
          return;
        }
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      });
    }
    connect();
  }

  function setShift(on) {
    const button = document.getElementById("shift-toggle");
    if (!button) return;
    button.dataset.state = on ? "on" : "off";
    button.textContent = on ? "On shift" : "Off shift";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("shift-toggle");
    if (button) {
      button.addEventListener("click", async () => {
        const on = button.dataset.state !== "on";
        button.disabled = true;
        try {
          const result = await api("POST", "/api/shift", { on_shift: on });
          setShift(result.on_shift);
          toast(result.on_shift ? "You are on shift" : "You are off shift");
        } catch (e) { fail(e); } finally { button.disabled = false; }
      });
    }
    // confirm buttons: <button data-confirm="Really?">
    document.querySelectorAll("[data-confirm]").forEach((node) => {
      node.addEventListener("click", (ev) => {
        if (!confirm(node.dataset.confirm)) ev.preventDefault();
      });
    });
  });

  window.Kz = { api, ApiError, el, toast, fail, ago, clock, debounce, live, setShift, prefix };
})();

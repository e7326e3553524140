/* Kizuna chat widget. A shop adds one line to its pages:
 *
 *   <script src="https://HOST/chat/widget.js" async></script>
 *
 * and gets a floating chat bubble that opens the chat page (HOST/chat) in an iframe. Styles are
 * set through element.style (allowed under a strict shop CSP, unlike <style> tags) so the shop's
 * CSS cannot restyle the widget by accident and the widget cannot touch the shop's CSS.
 */
(function () {
  "use strict";
  if (window.__kizunaChatWidget) return;
  window.__kizunaChatWidget = true;

  const script = document.currentScript || (function () {
    const found = document.querySelectorAll('script[src*="/widget.js"]');
    return found[found.length - 1];
  })();
  if (!script || !script.src) return;

  const source = new URL(script.src, location.href);
  const chatUrl = source.href.replace(/\/widget\.js(?:[?#].*)?$/, "");
  const chatOrigin = source.origin;
  const ACCENT = "#c2416b";

  const LABELS = {
    ja: { open: "チャットを開く", close: "チャットを閉じる", title: "チャット" },
    en: { open: "Open chat", close: "Close chat", title: "Chat" },
    zh: { open: "打开聊天", close: "关闭聊天", title: "聊天" },
  };
  const base = (navigator.language || "en").toLowerCase().split(/[-_]/)[0];
  const L = LABELS[base] || LABELS.en;

  function style(node, rules) {
    for (const key of Object.keys(rules)) node.style.setProperty(key, rules[key], "important");
  }

  function icon(paths) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    svg.setAttribute("aria-hidden", "true");
    for (const d of paths) {
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "#fff");
      path.setAttribute("stroke-width", "2");
      path.setAttribute("stroke-linecap", "round");
      path.setAttribute("stroke-linejoin", "round");
      svg.appendChild(path);
    }
    return svg;
  }

  function mount() {
    const root = document.createElement("div");
    root.setAttribute("data-kizuna-chat", "");
    style(root, { all: "initial", position: "fixed", "z-index": "2147483000" });

    const bubble = document.createElement("button");
    bubble.type = "button";
    bubble.setAttribute("aria-label", L.open);
    bubble.setAttribute("aria-expanded", "false");
    style(bubble, {
      position: "fixed", right: "20px", bottom: "20px", width: "60px", height: "60px",
      margin: "0", padding: "0", border: "0", "border-radius": "50%", background: ACCENT,
      cursor: "pointer", display: "flex", "align-items": "center", "justify-content": "center",
      "box-shadow": "0 6px 20px rgba(0,0,0,.22)", "z-index": "2147483001",
      transition: "transform .15s ease",
    });
    const chatIcon = icon(["M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"]);
    const closeIcon = icon(["M6 6l12 12", "M18 6L6 18"]);
    bubble.appendChild(chatIcon);
    bubble.addEventListener("mouseenter", () => style(bubble, { transform: "scale(1.06)" }));
    bubble.addEventListener("mouseleave", () => style(bubble, { transform: "none" }));

    const badge = document.createElement("span");
    style(badge, {
      position: "absolute", top: "-2px", right: "-2px", "min-width": "20px", height: "20px",
      padding: "0 5px", "border-radius": "10px", background: "#e5484d", color: "#fff",
      font: "600 12px/20px system-ui, sans-serif", "text-align": "center",
      "box-sizing": "border-box", display: "none",
    });
    bubble.appendChild(badge);

    const panel = document.createElement("div");
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", L.title);
    style(panel, {
      position: "fixed", display: "none", overflow: "hidden", background: "#fff",
      "box-shadow": "0 12px 40px rgba(0,0,0,.25)", "z-index": "2147483002",
    });

    let frame = null;
    let open = false;
    let unread = 0;

    function layout() {
      const small = window.innerWidth < 520 || window.innerHeight < 560;
      if (small) {
        style(panel, { inset: "0", right: "0", bottom: "0", width: "100%", height: "100%",
          "border-radius": "0" });
      } else {
        style(panel, { inset: "auto", right: "20px", bottom: "92px", width: "380px",
          height: "min(640px, calc(100vh - 120px))", "border-radius": "16px" });
      }
      // Full-screen panels carry their own close button (in the chat header), so the bubble
      // would only cover the composer.
      style(bubble, { display: open && small ? "none" : "flex" });
    }

    function setUnread(count) {
      unread = count;
      badge.textContent = count > 9 ? "9+" : String(count);
      style(badge, { display: count > 0 ? "block" : "none" });
    }

    function toggle(show) {
      open = show;
      if (open && !frame) {
        frame = document.createElement("iframe");
        frame.src = chatUrl;
        frame.title = L.title;
        frame.setAttribute("allow", "clipboard-write");
        style(frame, { border: "0", width: "100%", height: "100%", display: "block" });
        panel.appendChild(frame);
      }
      style(panel, { display: open ? "block" : "none" });
      bubble.setAttribute("aria-expanded", String(open));
      bubble.setAttribute("aria-label", open ? L.close : L.open);
      bubble.replaceChild(open ? closeIcon : chatIcon, open ? chatIcon : closeIcon);
      if (open) {
        setUnread(0);
        if (frame.contentWindow) frame.contentWindow.postMessage({ type: "kizuna:focus" }, chatOrigin);
      }
      layout();
    }

    bubble.addEventListener("click", () => toggle(!open));
    window.addEventListener("resize", layout);
    window.addEventListener("message", (event) => {
      if (!frame || event.source !== frame.contentWindow || event.origin !== chatOrigin) return;
      const data = event.data || {};
      if (data.type === "kizuna:close") {
        toggle(false);
        bubble.focus();
      } else if (data.type === "kizuna:message" && !open) {
        setUnread(unread + 1);
      }
    });

    root.appendChild(panel);
    root.appendChild(bubble);
    document.body.appendChild(root);
    layout();
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();

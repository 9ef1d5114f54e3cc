/* Shared helpers for the pages: config, UI strings, formatting, API calls, clipboard.
 * Untrusted text is only ever inserted with textContent; the single exception in the pages is server-sanitised
 * HTML (snippet_html, article html), inserted by the page scripts where noted. */
(function () {
  "use strict";

  const cfgNode = document.getElementById("kb-config");
  const cfg = cfgNode ? JSON.parse(cfgNode.textContent) : {};
  const strings = cfg.strings || {};
  const ui = cfg.ui || "en";

  function t(key, params) {
    let s = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (params) {
      s = s.replace(/\{(\w+)\}/g, (m, k) => (Object.prototype.hasOwnProperty.call(params, k) ? String(params[k]) : m));
    }
    return s;
  }

  function plural(n, oneKey, otherKey) {
    let cat = "other";
    try { cat = new Intl.PluralRules(ui).select(n); } catch (e) { cat = n === 1 ? "one" : "other"; }
    return t(cat === "one" ? oneKey : otherKey, { n: formatNumber(n) });
  }

  function formatNumber(n) {
    try { return new Intl.NumberFormat(ui).format(n); } catch (e) { return String(n); }
  }

  function formatPercent(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "—";
    try { return new Intl.NumberFormat(ui, { style: "percent", maximumFractionDigits: 1 }).format(x); }
    catch (e) { return (x * 100).toFixed(1) + "%"; }
  }

  function formatDate(iso) {
    if (!iso || !/^\d{4}-\d{2}-\d{2}/.test(iso)) return iso || "";
    const d = new Date(iso.slice(0, 10) + "T00:00:00Z");
    try { return new Intl.DateTimeFormat(ui, { dateStyle: "medium", timeZone: "UTC" }).format(d); }
    catch (e) { return iso.slice(0, 10); }
  }

  function langName(code) {
    if (!code) return "";
    if (cfg.langNames && cfg.langNames[code]) return cfg.langNames[code];
    try {
      const name = new Intl.DisplayNames([ui], { type: "language" }).of(code);
      if (name) return name;
    } catch (e) { /* unknown code */ }
    return code;
  }

  function regionName(code) {
    if (code === "*") return t("all_countries");
    try {
      const name = new Intl.DisplayNames([ui], { type: "region" }).of(code);
      if (name) return name;
    } catch (e) { /* unknown code */ }
    return code;
  }

  function topicName(slug) {
    return (cfg.topics && cfg.topics[slug]) || slug;
  }

  /** Element with text content only: el("li", {class: "chip"}, "text"). */
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // sessionStorage can be denied (a third-party iframe when the browser blocks third-party storage, or
  // storage switched off): values then live in memory for the life of the page.
  const memory = new Map();

  /** A value kept in sessionStorage (API keys: this tab only, gone when it closes), else in memory. */
  function stored(name) {
    return {
      get() {
        try { return sessionStorage.getItem(name) || ""; } catch (e) { return memory.get(name) || ""; }
      },
      set(v) {
        try { sessionStorage.setItem(name, v); } catch (e) { memory.set(name, v); }
      },
      clear() {
        memory.delete(name);
        try { sessionStorage.removeItem(name); } catch (e) { /* storage denied: memory only */ }
      },
    };
  }

  const session = stored("kb-session");

  function sessionId() {
    let id = session.get();
    if (!id) {
      id = randomId();
      session.set(id);
    }
    return id;
  }

  // Analytics: the channel this page's calls come from (the API believes "agent" only with an agent key).
  const CHANNEL = { help: "selfservice", article: "selfservice", articles: "selfservice", topic: "selfservice",
    contact: "selfservice", not_found: "selfservice", agent: "agent" }[cfg.page] || null;

  /** fetch wrapper: JSON in, {ok, status, data} out; never throws for HTTP errors. */
  async function api(method, path, opts) {
    const o = opts || {};
    const headers = Object.assign({ Accept: "application/json" }, CHANNEL ? { "X-KB-Channel": CHANNEL } : {},
      o.headers || {});
    const sid = sessionId();
    if (sid) headers["X-KB-Session"] = sid;
    const init = { method, headers, credentials: "same-origin", signal: o.signal, keepalive: !!o.keepalive };
    if (o.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(o.body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      return { ok: false, status: 0, data: null };
    }
    let data = null;
    const type = resp.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
      try { data = await resp.json(); } catch (e) { data = null; }
    }
    return { ok: resp.ok, status: resp.status, data, response: resp };
  }

  /** Fire-and-forget event that survives navigation: fetch keepalive, else sendBeacon. */
  function sendEvent(path, body, headers) {
    const sid = sessionId();
    const h = Object.assign({ "Content-Type": "application/json" }, CHANNEL ? { "X-KB-Channel": CHANNEL } : {},
      headers || {});
    if (sid) h["X-KB-Session"] = sid;
    try {
      fetch(path, { method: "POST", headers: h, body: JSON.stringify(body), keepalive: true,
        credentials: "same-origin" }).catch(() => {});
      return true;
    } catch (e) {
      if (navigator.sendBeacon) {
        return navigator.sendBeacon(path, new Blob([JSON.stringify(body)], { type: "application/json" }));
      }
      return false;
    }
  }

  function copyFallback(text) {
    const area = el("textarea", { readonly: true, "aria-hidden": "true", class: "visually-hidden" });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (e) { /* permission denied (e.g. iframe without clipboard-write): fall back */ }
    }
    return copyFallback(text);
  }

  function localizeDates(root) {
    for (const node of (root || document).querySelectorAll("time[data-date]")) {
      node.textContent = formatDate(node.getAttribute("datetime"));
    }
    for (const node of (root || document).querySelectorAll("[data-region]")) {
      node.textContent = regionName(node.getAttribute("data-region"));
    }
  }

  /** Contact links (help page and footer) count towards the deflection report. */
  function bindContactLinks(getSearchId) {
    document.addEventListener("click", (ev) => {
      const link = ev.target.closest && ev.target.closest("a.contact-link");
      if (!link) return;
      const id = getSearchId ? getSearchId() : null;
      sendEvent("/api/v1/events/contact", id ? { search_id: id } : {});
    });
  }

  /* A status line: text, flagged as an error or not. */
  function statusSetter(node) {
    return function (text, isError) {
      node.textContent = text;
      node.classList.toggle("is-error", !!isError);
    };
  }

  /* The API-key form of the agent and admin pages: shown while no key is stored, with an error if any.
   * Binds the form (store the key, then onSet) and the "forget" button (onForget); returns show(error). */
  function keyPanel(parts) {
    function show(error) {
      const has = !!parts.key.get();
      parts.form.hidden = has;
      parts.bar.hidden = !has;
      parts.error.hidden = !error;
      parts.error.textContent = error || "";
      if (!has && (error || parts.focusAlways)) parts.input.focus();
    }
    parts.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = parts.input.value.trim();
      if (!v) return;
      parts.key.set(v);
      parts.input.value = "";
      show();
      if (parts.onSet) parts.onSet();
    });
    parts.forget.addEventListener("click", () => {
      parts.key.clear();
      if (parts.onForget) parts.onForget();
      show();
      parts.input.focus();
    });
    return show;
  }

  window.KB = {
    cfg, ui, t, plural, formatNumber, formatPercent, formatDate, langName, regionName, topicName, el,
    sessionId, stored, api, sendEvent, copyText, localizeDates, bindContactLinks, statusSetter, keyPanel,
  };
  localizeDates(document);
})();

/* Agent sidebar (/agent): ticket text in, entities and suggested articles out. Fits a 360 px iframe.
 * Ticket text arrives by paste, ?text=, or postMessage {type: "kb-ticket", text} from an allowed origin. */
(function () {
  "use strict";
  const KB = window.KB;
  const t = KB.t;
  const key = KB.stored("kb-agent-key");
  const allowed = new Set(KB.cfg.embedOrigins || []);

  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const keyError = document.getElementById("key-error");
  const keyBar = document.getElementById("key-bar");
  const ticketForm = document.getElementById("ticket-form");
  const ticket = document.getElementById("ticket");
  const status = document.getElementById("agent-status");
  const entitiesBox = document.getElementById("entities");
  const entityList = document.getElementById("entity-list");
  const noEntities = document.getElementById("no-entities");
  const suggestionsBox = document.getElementById("suggestions");
  const suggestionList = document.getElementById("suggestion-list");
  const lowConfidence = document.getElementById("low-confidence");
  const noSuggestions = document.getElementById("no-suggestions");
  const tpl = document.getElementById("suggestion-template");
  let busy = false;

  const setStatus = KB.statusSetter(status);

  const showKey = KB.keyPanel({
    key, form: keyForm, bar: keyBar, error: keyError, input: keyInput, forget: document.getElementById("key-forget"),
    onSet: () => { if (ticket.value.trim()) run(); else ticket.focus(); },
  });

  function authHeaders() {
    return { "X-API-Key": key.get() };
  }

  function handleAuth(res) {
    if (res.status === 401) {
      key.clear();
      showKey(t("key_invalid"));
      return true;
    }
    if (res.status === 403) {
      key.clear();
      showKey(t("key_forbidden"));
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ entities
  function amountText(a) {
    try {
      return new Intl.NumberFormat(KB.ui, { style: "currency", currency: a.currency }).format(a.value);
    } catch (e) {
      return KB.formatNumber(a.value) + " " + a.currency;
    }
  }

  function renderEntities(ent) {
    entityList.replaceChildren();
    const groups = [
      ["tracking_numbers", (ent.tracking_numbers || []).map((x) => ({ text: x.value, title: x.format, mono: true }))],
      ["hs_codes", (ent.hs_codes || []).map((x) => ({ text: x, mono: true }))],
      ["countries", (ent.countries || []).map((c) => ({ text: KB.regionName(c) + " (" + c + ")" }))],
      ["weights", (ent.weights || []).map((w) => ({ text: KB.formatNumber(w.value) + " " + w.unit }))],
      ["amounts", (ent.amounts || []).map((a) => ({ text: amountText(a) }))],
      ["documents", (ent.documents || []).map((d) => ({ text: d }))],
    ];
    let count = 0;
    for (const [name, items] of groups) {
      if (!items.length) continue;
      count += items.length;
      entityList.appendChild(KB.el("dt", { "data-entity": name }, t(name)));
      const dd = KB.el("dd");
      const ul = KB.el("ul", { class: "chips" });
      for (const it of items) {
        ul.appendChild(KB.el("li", { class: "chip" + (it.mono ? " entity" : ""), title: it.title || null }, it.text));
      }
      dd.appendChild(ul);
      entityList.appendChild(dd);
    }
    noEntities.hidden = count > 0;
    entitiesBox.hidden = false;
  }

  // ------------------------------------------------------------------ suggestions
  function articleUrl(s) {
    return new URL("/articles/" + encodeURIComponent(s.article_id) + "?lang=" + encodeURIComponent(s.lang),
      window.location.origin).toString();
  }

  function renderSuggestion(s, assistId) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    const internal = s.audience === "internal";
    li.querySelector(".card").setAttribute("lang", s.lang);
    const link = li.querySelector(".suggestion-link");
    const plain = li.querySelector(".suggestion-title");
    if (internal) {
      // the public article page does not show internal articles: no link to share
      link.remove();
      plain.textContent = s.title;
      li.querySelector(".badge.internal").hidden = false;
      li.querySelector(".internal-note").hidden = false;
      li.querySelector(".copy-link").remove();
    } else {
      plain.remove();
      link.textContent = s.title;
      link.href = articleUrl(s);
    }
    const p = s.passage || {};
    li.querySelector(".passage-heading").textContent = p.heading || "";
    li.querySelector(".passage-text").textContent = p.text || s.snippet || "";

    li.querySelector(".copy-passage").addEventListener("click", async () => {
      const ok = await KB.copyText(p.text || s.snippet || "");
      setStatus(ok ? t("copied") : t("copy_failed"), !ok);
    });
    const copyLink = li.querySelector(".copy-link");
    if (copyLink) {
      copyLink.addEventListener("click", async () => {
        const ok = await KB.copyText(articleUrl(s) + (p.anchor ? "#" + p.anchor : ""));
        setStatus(ok ? t("copied") : t("copy_failed"), !ok);
      });
    }

    const toggle = li.querySelector(".toggle-article");
    const full = li.querySelector(".full-article");
    toggle.addEventListener("click", async () => {
      const open = toggle.getAttribute("aria-expanded") === "true";
      if (open) {
        full.hidden = true;
        toggle.setAttribute("aria-expanded", "false");
        toggle.textContent = t("show_article");
        return;
      }
      if (!full.dataset.loaded) {
        const res = await KB.api("GET", "/api/v1/articles/" + encodeURIComponent(s.article_id) + "?lang=" +
          encodeURIComponent(s.lang), { headers: authHeaders() });
        if (handleAuth(res)) return;
        if (!res.ok || !res.data) {
          setStatus(t("assist_error"), true);
          return;
        }
        full.setAttribute("lang", res.data.lang);
        // article html is rendered from Markdown and cleaned by nh3 on the server
        full.innerHTML = res.data.html;
        full.dataset.loaded = "1";
      }
      full.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      toggle.textContent = t("hide_article");
    });

    const votes = Array.from(li.querySelectorAll("button.vote"));
    for (const b of votes) {
      b.addEventListener("click", async () => {
        votes.forEach((v) => { v.disabled = true; });
        const res = await KB.api("POST", "/api/v1/feedback", {
          headers: authHeaders(),
          body: { search_id: assistId, article_id: s.article_id, helpful: b.dataset.helpful === "true" },
        });
        if (handleAuth(res)) return;
        if (res.ok) {
          b.setAttribute("aria-pressed", "true");
          setStatus(t("vote_saved"));
        } else {
          votes.forEach((v) => { v.disabled = false; });
          setStatus(t("assist_error"), true);
        }
      });
    }
    return li;
  }

  // ------------------------------------------------------------------ assist
  async function run() {
    const text = ticket.value.trim();
    if (!text) {
      setStatus(t("empty_ticket"), true);
      ticket.focus();
      return;
    }
    if (!key.get()) {
      showKey();
      keyInput.focus();
      return;
    }
    if (busy) return;
    busy = true;
    setStatus(t("working"));
    suggestionsBox.setAttribute("aria-busy", "true");
    const res = await KB.api("POST", "/api/v1/assist", { headers: authHeaders(), body: { text: text.slice(0, 5000) } });
    busy = false;
    suggestionsBox.removeAttribute("aria-busy");
    if (handleAuth(res)) {
      setStatus("");
      return;
    }
    if (!res.ok || !res.data) {
      setStatus(res.status === 429 ? t("rate_limited") : t("assist_error"), true);
      return;
    }
    const data = res.data;
    renderEntities(data.entities || {});
    suggestionList.replaceChildren();
    const items = data.suggestions || [];
    items.forEach((s) => suggestionList.appendChild(renderSuggestion(s, data.assist_id)));
    noSuggestions.hidden = items.length > 0;
    lowConfidence.hidden = !(items.length && data.no_confident_answer);
    suggestionsBox.hidden = false;
    setStatus(KB.plural(items.length, "results_one", "results_other"));
  }

  ticketForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  ticket.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run();
    }
  });

  // The embedding CRM sends the open ticket; only configured origins are listened to.
  window.addEventListener("message", (ev) => {
    if (!allowed.has(ev.origin)) return;
    const d = ev.data;
    if (!d || typeof d !== "object" || d.type !== "kb-ticket" || typeof d.text !== "string") return;
    ticket.value = d.text.slice(0, 5000);
    setStatus(t("ticket_received"));
    if (key.get()) run();
  });
  if (window.parent !== window) {
    for (const origin of allowed) {
      try { window.parent.postMessage({ type: "kb-ready" }, origin); } catch (e) { /* bad origin string */ }
    }
  }

  showKey();
  if (ticket.value.trim() && key.get()) run();
})();

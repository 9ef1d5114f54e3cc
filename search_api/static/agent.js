/* Agent sidebar (/agent): ticket text in, entities and suggested articles out; a direct search of the whole
 * knowledge base (internal articles included); a reply draft. Fits a 360 px iframe.
 * Ticket text arrives by paste, ?text=, or postMessage {type: "kb-ticket", text} from an allowed origin; the
 * latest text always wins: a request still running for older text is aborted and its answer ignored.
 * "Insert into reply" adds a short customer-ready answer (the best passage, cut to a few sentences, and the
 * article's link, in the article's language) to the reply draft, and posts {type: "kb-insert", text} to the
 * embedding CRM so it can put it into its own reply box. Internal articles have no insert: not for customers. */
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
  const searchedFor = document.getElementById("searched-for");
  const questionGroups = document.getElementById("question-groups");
  const suggestionsBox = document.getElementById("suggestions");
  const suggestionList = document.getElementById("suggestion-list");
  const lowConfidence = document.getElementById("low-confidence");
  const noSuggestions = document.getElementById("no-suggestions");
  const tpl = document.getElementById("suggestion-template");
  const searchForm = document.getElementById("kb-search-form");
  const searchInput = document.getElementById("kb-q");
  const resultsBox = document.getElementById("kb-results");
  const resultList = document.getElementById("kb-result-list");
  const noResults = document.getElementById("kb-no-results");
  const replyBox = document.getElementById("reply");
  const replyText = document.getElementById("reply-text");
  const readMore = KB.cfg.readMore || {};
  const embedded = window.parent !== window && allowed.size > 0;
  let assistRun = null; // {controller, text} of the assist request in flight
  let searchRun = null; // {controller, q} of the knowledge-base search in flight

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

  function renderEntities(ent, questions) {
    entityList.replaceChildren();
    // what was searched: the customer's sentences (a chat log's labels and agent turns left out)
    questionGroups.replaceChildren(...questions.map((q) => KB.el("li", {}, q)));
    searchedFor.hidden = !questions.length;
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

  // ------------------------------------------------------------------ reply draft
  const SENTENCE_END = /[.!?।።॥](?=\s|$)/g;

  /** The first sentences of a passage, about 350 characters at most, cut at a sentence end. */
  function shortAnswer(text) {
    const clean = String(text || "").replace(/\s+/g, " ").trim();
    if (clean.length <= 350) return clean;
    let cut = -1;
    let m;
    SENTENCE_END.lastIndex = 0;
    while ((m = SENTENCE_END.exec(clean)) !== null && m.index < 350) cut = m.index + 1;
    if (cut > 80) return clean.slice(0, cut);
    const space = clean.lastIndexOf(" ", 350);
    return clean.slice(0, space > 80 ? space : 350) + " …";
  }

  function replyFor(s) {
    const p = s.passage || {};
    const link = articleUrl(s) + (p.anchor ? "#" + encodeURIComponent(p.anchor) : "");
    const label = readMore[s.lang] || t("read_more");
    return shortAnswer(p.text || s.snippet || "") + "\n\n" + label + ": " + s.title + "\n" + link;
  }

  function insertReply(text) {
    const current = replyText.value.replace(/\s+$/, "");
    replyText.value = current ? current + "\n\n" + text : text;
    replyBox.hidden = false;
    let sent = false;
    if (embedded) {
      for (const origin of allowed) {
        try {
          window.parent.postMessage({ type: "kb-insert", text }, origin);
          sent = true;
        } catch (e) { /* bad origin string */ }
      }
    }
    setStatus(sent ? t("reply_sent_crm") : t("inserted"));
  }

  document.getElementById("copy-reply").addEventListener("click", async () => {
    const text = replyText.value.trim();
    if (!text) {
      setStatus(t("reply_empty"), true);
      return;
    }
    const ok = await KB.copyText(text);
    setStatus(ok ? t("copied") : t("copy_failed"), !ok);
  });
  document.getElementById("clear-reply").addEventListener("click", () => {
    replyText.value = "";
    replyBox.hidden = true;
    setStatus("");
    ticket.focus();
  });

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
      li.querySelector(".insert-reply").remove();
    } else {
      plain.remove();
      link.textContent = s.title;
      link.href = articleUrl(s);
    }
    const p = s.passage || {};
    li.querySelector(".passage-heading").textContent = p.heading || "";
    li.querySelector(".passage-text").textContent = p.text || s.snippet || "";

    const insert = li.querySelector(".insert-reply");
    if (insert) insert.addEventListener("click", () => insertReply(replyFor(s)));
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
    const text = ticket.value.trim().slice(0, 5000);
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
    if (assistRun && assistRun.text === text) return; // already working on exactly this text
    const replacing = !!assistRun;
    if (assistRun) assistRun.controller.abort();
    const mine = { controller: new AbortController(), text };
    assistRun = mine;
    setStatus(replacing ? t("ticket_updated") : t("working"));
    suggestionsBox.setAttribute("aria-busy", "true");
    ticketForm.classList.add("is-busy");
    let res;
    try {
      res = await KB.api("POST", "/api/v1/assist", { headers: authHeaders(), body: { text },
        signal: mine.controller.signal });
    } catch (e) {
      return; // aborted: newer ticket text replaced this request, and its own run reports
    }
    if (assistRun !== mine) return; // an answer for older text: never shown over the newer one
    assistRun = null;
    suggestionsBox.removeAttribute("aria-busy");
    ticketForm.classList.remove("is-busy");
    if (handleAuth(res)) {
      setStatus("");
      return;
    }
    if (!res.ok || !res.data) {
      setStatus(res.status === 429 ? t("rate_limited") : t("assist_error"), true);
      return;
    }
    const data = res.data;
    renderEntities(data.entities || {}, data.question_groups || []);
    suggestionList.replaceChildren();
    const items = data.suggestions || [];
    items.forEach((s) => suggestionList.appendChild(renderSuggestion(s, data.assist_id)));
    noSuggestions.hidden = items.length > 0;
    lowConfidence.hidden = !(items.length && data.no_confident_answer);
    suggestionsBox.hidden = false;
    suggestionsBox.dataset.text = text; // which ticket text these suggestions answer
    setStatus(KB.plural(items.length, "results_one", "results_other"));
  }

  // ------------------------------------------------------------------ knowledge-base search
  async function search() {
    const q = searchInput.value.trim().replace(/\s+/g, " ").slice(0, 500);
    if (!q) {
      searchInput.focus();
      return;
    }
    if (!key.get()) {
      showKey();
      keyInput.focus();
      return;
    }
    if (searchRun) searchRun.controller.abort();
    const mine = { controller: new AbortController(), q };
    searchRun = mine;
    setStatus(t("searching"));
    resultsBox.setAttribute("aria-busy", "true");
    const params = new URLSearchParams({ q, limit: "10" });
    let res;
    try {
      res = await KB.api("GET", "/api/v1/search?" + params.toString(), { headers: authHeaders(),
        signal: mine.controller.signal });
    } catch (e) {
      return; // aborted by a newer search
    }
    if (searchRun !== mine) return;
    searchRun = null;
    resultsBox.removeAttribute("aria-busy");
    if (handleAuth(res)) {
      setStatus("");
      return;
    }
    if (!res.ok || !res.data) {
      setStatus(res.status === 429 ? t("rate_limited") : t("search_error"), true);
      return;
    }
    const items = res.data.results || [];
    resultList.replaceChildren();
    items.forEach((r) => resultList.appendChild(renderSuggestion(r, res.data.search_id)));
    noResults.hidden = items.length > 0;
    resultsBox.hidden = false;
    resultsBox.dataset.q = q;
    // total: every card above the relevance floor, of which this page shows the first ten
    setStatus(KB.plural(res.data.total ?? items.length, "results_one", "results_other"));
  }

  searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    search();
  });

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

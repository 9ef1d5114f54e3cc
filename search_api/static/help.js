/* Help center: search as you type (/), article feedback (/articles/<id>). */
(function () {
  "use strict";
  const KB = window.KB;
  const t = KB.t;
  const PAGE = 10;
  const MAX_RESULTS = 50; // the API ranks at most 50 results (offset <= 49)
  // As-you-type search waits for a pause in typing. The pause is measured on the typist: someone who types a
  // key every 400 ms would otherwise send (and log as a search) every prefix of the question.
  const DEBOUNCE_MIN_MS = 300;
  const DEBOUNCE_MAX_MS = 900;
  const MIN_AUTO_CHARS = 2; // one letter is not a question; Enter still searches it
  let currentSearchId = null;

  // ------------------------------------------------------------------ search page
  function initSearch(form) {
    const input = document.getElementById("q");
    const list = document.getElementById("results");
    const status = document.getElementById("status");
    const more = document.getElementById("more");
    const noAnswer = document.getElementById("no-answer");
    const tpl = document.getElementById("result-template");
    const state = { q: "", shown: 0, total: 0, detected: null, seq: 0, controller: null, timer: null,
      sentQ: null, lastKeyAt: 0, gaps: [] };

    function setStatus(text, isError) {
      status.textContent = text;
      status.classList.toggle("is-error", !!isError);
    }

    function resultLinks() {
      return Array.from(list.querySelectorAll("a.result-link"));
    }

    function card(r, rank, searchId) {
      const li = tpl.content.firstElementChild.cloneNode(true);
      const art = li.querySelector(".card");
      art.setAttribute("lang", r.lang);
      const a = li.querySelector("a.result-link");
      a.textContent = r.title;
      const params = new URLSearchParams({ lang: r.lang, sid: searchId });
      a.href = "/articles/" + encodeURIComponent(r.article_id) + "?" + params.toString();
      a.dataset.articleId = r.article_id;
      a.dataset.rank = String(rank);
      a.dataset.searchId = searchId;
      // snippet_html is built server side: the passage text html-escaped, with <mark> around matches.
      li.querySelector(".snippet").innerHTML = r.snippet_html || "";
      if (r.lang_fallback) {
        const label = li.querySelector(".fallback");
        label.textContent = t("fallback_label", { shown: KB.langName(r.lang), wanted: KB.langName(state.wanted) });
        label.setAttribute("lang", KB.ui);
        label.hidden = false;
      }
      li.querySelector(".stale").hidden = !r.stale;
      const chips = li.querySelector(".chips");
      chips.setAttribute("lang", KB.ui);
      for (const topic of r.topics || []) chips.appendChild(KB.el("li", { class: "chip topic" }, KB.topicName(topic)));
      for (const c of r.countries || []) chips.appendChild(KB.el("li", { class: "chip country" }, KB.regionName(c)));
      return li;
    }

    function clear() {
      list.replaceChildren();
      more.hidden = true;
      noAnswer.hidden = true;
      state.shown = 0;
      state.total = 0;
      currentSearchId = null;
    }

    function syncUrl(q) {
      const url = new URL(window.location.href);
      if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
      url.searchParams.delete("ui"); // the language choice lives in a cookie once made
      window.history.replaceState(null, "", url.pathname + url.search);
    }

    async function run(q, offset) {
      q = q.trim().replace(/\s+/g, " ");
      // a newer search replaces the one in flight: abort it, and ignore its answer if it still arrives
      if (state.controller) state.controller.abort();
      state.controller = null;
      window.clearTimeout(state.timer);
      const seq = ++state.seq;
      if (!q) {
        state.sentQ = null;
        clear();
        setStatus("");
        syncUrl("");
        return;
      }
      if (offset === 0) state.sentQ = q;
      const controller = new AbortController();
      state.controller = controller;
      form.classList.add("is-busy");
      list.setAttribute("aria-busy", "true");
      const params = new URLSearchParams({ q, limit: String(PAGE), offset: String(offset) });
      let res;
      try {
        res = await KB.api("GET", "/api/v1/search?" + params.toString(),
          { headers: { "X-KB-Channel": "selfservice" }, signal: controller.signal });
      } catch (e) {
        return; // aborted by a newer keystroke
      } finally {
        if (seq === state.seq) {
          form.classList.remove("is-busy");
          list.removeAttribute("aria-busy");
        }
      }
      if (seq !== state.seq) return;
      state.controller = null;
      if (!res.ok || !res.data) {
        if (offset === 0) {
          clear();
          state.sentQ = null; // let the same text be tried again
        }
        setStatus(res.status === 429 ? t("rate_limited") : t("search_error"), true);
        return;
      }
      const data = res.data;
      syncUrl(q);
      if (offset === 0) {
        clear();
        state.q = q;
        state.detected = data.detected_lang;
        state.wanted = data.answer_lang || data.detected_lang; // lang_fallback is measured against answer_lang
        currentSearchId = data.search_id;
        if (data.no_confident_answer) {
          noAnswer.hidden = false;
          setStatus(t("no_answer_title"));
          return;
        }
      }
      const results = data.results || [];
      state.total = Math.min(data.total || 0, MAX_RESULTS);
      const firstNew = list.children.length;
      results.forEach((r, i) => list.appendChild(card(r, offset + i + 1, data.search_id)));
      state.shown = offset + results.length;
      more.hidden = !(results.length && state.shown < state.total && state.shown < MAX_RESULTS);
      if (state.shown === 0) setStatus(t("no_results"));
      else setStatus(KB.plural(state.total, "results_one", "results_other"));
      if (offset > 0) {
        const links = resultLinks();
        if (links[firstNew]) links[firstNew].focus();
      }
    }

    function typingPause() {
      const gaps = state.gaps.slice().sort((a, b) => a - b);
      const typical = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0;
      return Math.min(DEBOUNCE_MAX_MS, Math.max(DEBOUNCE_MIN_MS, typical * 1.6));
    }

    function schedule() {
      window.clearTimeout(state.timer);
      state.timer = window.setTimeout(() => {
        const q = input.value.trim().replace(/\s+/g, " ");
        if (q === state.sentQ) return; // only spaces changed: the results shown already answer it
        if (q && q.length < MIN_AUTO_CHARS) return;
        run(q, 0);
      }, typingPause());
    }

    input.addEventListener("input", (ev) => {
      const now = performance.now();
      if (state.lastKeyAt && now - state.lastKeyAt < 2000) {
        state.gaps.push(now - state.lastKeyAt);
        if (state.gaps.length > 6) state.gaps.shift();
      }
      state.lastKeyAt = now;
      if (ev.isComposing) return; // an input method (Tamil, Hindi…) is still composing the letter
      schedule();
    });
    input.addEventListener("compositionend", schedule);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(input.value, 0);
    });
    more.addEventListener("click", () => run(state.q, state.shown));

    // Keyboard: ArrowDown from the box enters the results; ArrowUp/Down move between result links.
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowDown") {
        const links = resultLinks();
        if (links.length) {
          ev.preventDefault();
          links[0].focus();
        }
      }
    });
    list.addEventListener("keydown", (ev) => {
      const link = ev.target.closest("a.result-link");
      if (!link) return;
      const links = resultLinks();
      const i = links.indexOf(link);
      if (ev.key === "ArrowDown") {
        ev.preventDefault();
        if (i < links.length - 1) links[i + 1].focus();
        else if (!more.hidden) more.focus();
      } else if (ev.key === "ArrowUp") {
        ev.preventDefault();
        if (i > 0) links[i - 1].focus(); else input.focus();
      } else if (ev.key === "Home") {
        ev.preventDefault();
        links[0].focus();
      } else if (ev.key === "End") {
        ev.preventDefault();
        links[links.length - 1].focus();
      } else if (ev.key === "Escape") {
        input.focus();
      }
    });
    more.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowUp") {
        const links = resultLinks();
        if (links.length) {
          ev.preventDefault();
          links[links.length - 1].focus();
        }
      }
    });

    function logClick(ev) {
      const link = ev.target.closest("a.result-link");
      if (!link || (ev.type === "auxclick" && ev.button !== 1)) return;
      KB.sendEvent("/api/v1/events/click", {
        search_id: link.dataset.searchId, article_id: link.dataset.articleId, rank: Number(link.dataset.rank),
      });
    }
    list.addEventListener("click", logClick);
    list.addEventListener("auxclick", logClick);

    if (input.value.trim()) run(input.value, 0);
  }

  // ------------------------------------------------------------------ article page
  function initFeedback(form) {
    const status = document.getElementById("feedback-status");
    const comment = document.getElementById("feedback-comment");
    const buttons = Array.from(form.querySelectorAll("button.vote"));
    let sending = false;

    async function send(helpful, button) {
      if (sending) return;
      sending = true;
      buttons.forEach((b) => { b.disabled = true; });
      const body = { search_id: KB.cfg.sid || "direct", article_id: KB.cfg.articleId, helpful };
      const text = comment.value.trim();
      if (text) body.comment = text.slice(0, 2000);
      const res = await KB.api("POST", "/api/v1/feedback", { body });
      sending = false;
      if (res.ok) {
        button.setAttribute("aria-pressed", "true");
        form.hidden = true;
        status.classList.remove("is-error");
        status.textContent = t("feedback_thanks");
      } else {
        buttons.forEach((b) => { b.disabled = false; });
        status.classList.add("is-error");
        status.textContent = res.status === 429 ? t("rate_limited") : t("feedback_error");
      }
    }
    for (const b of buttons) b.addEventListener("click", () => send(b.dataset.helpful === "true", b));
  }

  const searchForm = document.getElementById("search-form");
  if (searchForm) initSearch(searchForm);
  const feedbackForm = document.getElementById("feedback-form");
  if (feedbackForm) initFeedback(feedbackForm);
  const searchIdNow = () => currentSearchId || (KB.cfg.sid && KB.cfg.sid !== "direct" ? KB.cfg.sid : null);
  KB.bindContactLinks(searchIdNow);
  // the link to the contact page carries the search, so a contact made there is counted against it
  document.addEventListener("click", (ev) => {
    const link = ev.target.closest && ev.target.closest("a.contact-page-link");
    const id = searchIdNow();
    if (!link || !id) return;
    const url = new URL(link.href, window.location.href);
    url.searchParams.set("sid", id);
    link.href = url.pathname + url.search;
  });
})();

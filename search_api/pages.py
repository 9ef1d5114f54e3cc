"""Server-rendered pages: help center, article list and topics, article pages, contact page, sitemap, agent
sidebar and analytics dashboard.

The pages are thin: templates hold the markup, static/*.js talks to the JSON API (/api/v1). The CSP is strict
(script-src 'self', style-src 'self'), so templates carry no inline script or style; what a script needs
travels in one ``<script type="application/json" id="kb-config">`` block. Article HTML comes from
:func:`kb.service.article_view`, already cleaned by nh3, and is the only markup inserted unescaped.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from kb.analytics import CHANNELS, REPORTS
from kb.articles import TOPICS
from kb.service import article_view, visible_articles

from . import i18n
from .errors import CODES, error_response

bp = Blueprint(
    "pages", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)

ARTICLE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,79}$")
LANG_CODE = re.compile(r"^[a-z]{2}$")
SEARCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STATIC_DIR = Path(__file__).with_name("static")
# What a support manager reads first: the people searching (customers in the help center, agents in the
# sidebar); integrations' traffic is one click away, so one integrator's burst cannot fill top queries.
DEFAULT_CHANNELS = ("selfservice", "agent")


@cache
def _static_version(filename: str) -> str:
    try:
        return str(int((STATIC_DIR / filename).stat().st_mtime))
    except OSError:
        return "0"


def static_url(filename: str) -> str:
    """URL of a static file with a version query, so a deploy is not hidden by browser caches."""
    return url_for("pages.static", filename=filename, v=_static_version(filename))


def _safe_link(url: str | None) -> str | None:
    """Only relative paths and http(s) URLs from the contact config become links."""
    if not url:
        return None
    url = str(url).strip()
    if (url.startswith("/") and not url.startswith("//")) or url.lower().startswith(("https://", "http://")):
        return url
    return None


def _contact() -> dict:
    c = current_app.config.get("CONTACT") or {}
    phone = str(c.get("phone") or "").strip()
    chat = _safe_link(c.get("chat_url"))
    if chat and chat.split("?")[0].split("#")[0].rstrip("/") == "/contact":
        chat = None  # the contact page is not a chat: a "Chat with us" link to it would promise what it lacks
    return {
        "email": str(c.get("email") or "").strip() or None,
        "phone": phone or None,
        "tel": re.sub(r"[^\d+]", "", phone) or None,
        "chat_url": chat,
    }


def _switch_links(ui: str) -> list[tuple[str, str, str, bool]]:
    """(code, autonym, url, current) for the language menu; keeps the page's other query parameters."""
    args = request.args.to_dict()
    view_args = request.view_args or {}
    endpoint = request.endpoint
    if endpoint is None or not endpoint.startswith("pages."):  # a 404 page: offer the help center instead
        endpoint, view_args, args = "pages.help_center", {}, {}
    out = []
    for code in i18n.LANGS:
        out.append(
            (
                code,
                i18n.AUTONYMS[code],
                url_for(endpoint, **view_args, **{**args, "ui": code}),
                code == ui,
            )
        )
    return out


def _render(template: str, status: int = 200, page: str = "", js: dict | None = None, **ctx) -> Response:
    ui, explicit = i18n.choose(request)
    ctx.setdefault("sid", "direct")
    config = {
        "page": page,
        "ui": ui,
        "strings": i18n.strings(ui),
        "langNames": i18n.LANG_NAMES[ui],
        "autonyms": i18n.AUTONYMS,
        "topics": i18n.TOPICS[ui],
        **(js or {}),
    }
    html = render_template(
        template,
        ui=ui,
        page=page,
        t=lambda key, **kw: i18n.t(ui, key, **kw),
        lang_name=lambda code: i18n.lang_name(ui, code),
        topic_name=lambda s: i18n.topic_name(ui, s),
        plural=lambda n, one, other: i18n.plural(ui, n, one, other),
        switch=_switch_links(ui),
        autonyms=i18n.AUTONYMS,
        static_url=static_url,
        contact=_contact(),
        config_json=config,
        **ctx,
    )
    resp = make_response(html, status)
    resp.headers["Content-Language"] = ui
    resp.headers["Vary"] = "Accept-Language, Cookie"
    resp.headers["Cache-Control"] = "no-store" if page in ("agent", "dashboard") else "no-cache"
    if status == 404:
        resp.headers["X-Robots-Tag"] = "noindex"
    if explicit:
        resp.set_cookie(
            i18n.COOKIE, ui, max_age=365 * 24 * 3600, samesite="Lax", httponly=True, secure=request.is_secure
        )
    return resp


def _searcher():
    """The live searcher, or None while no index is loaded."""
    service = current_app.extensions["kb_service"]
    return service.searcher if service.ready else None


def _unavailable() -> Response:
    return _render("message.html", 503, page="unavailable", title_key="unavailable_title",
                   text_key="unavailable_text")


def _not_found(title_key: str = "page_not_found_title", text_key: str = "page_not_found_text") -> Response:
    return _render("message.html", 404, page="not_found", title_key=title_key, text_key=text_key)


def _sid() -> str:
    sid = request.args.get("sid", "")
    return sid if SEARCH_ID.match(sid) else "direct"


def _browse_rows(searcher, ui: str) -> list[dict]:
    """One row per translation group the public may read today: the version in the interface language when
    there is one, else the group's source article. ``other_lang`` is set when that is not ``ui``; those rows
    come after the ones in the reader's language."""
    groups: dict[str, dict[str, dict]] = {}
    for row in visible_articles(searcher, "public"):
        groups.setdefault(row["group"], {})[row["lang"]] = row
    rows = []
    for group, versions in groups.items():
        pick = (versions.get(ui) or next((v for v in versions.values() if v["id"] == group), None)
                or versions.get("en") or next(iter(versions.values())))
        rows.append({**pick, "other_lang": pick["lang"] if pick["lang"] != ui else None})
    rows.sort(key=lambda r: (r["other_lang"] is not None, r["title"].casefold()))  # the reader's language first
    return rows


def _topic_counts(rows: list[dict]) -> list[tuple[str, int]]:
    """(topic, articles) for every topic with at least one public article, in the vocabulary's order."""
    return [(t, n) for t in TOPICS if (n := sum(1 for r in rows if t in r["topics"]))]


@bp.app_errorhandler(404)
def _page_not_found(e: HTTPException):
    """A page address that does not exist gets the help center's 404 page; the API keeps its JSON errors."""
    path = request.path
    if path.startswith(("/api/", "/static/")) or path in ("/healthz", "/readyz", "/openapi.json") \
            or not request.accept_mimetypes.accept_html:
        return error_response(404, CODES[404], e.description or e.name)
    return _not_found()


# ---------------------------------------------------------------------------- pages


@bp.get("/")
def help_center():
    q = request.args.get("q", "")[: current_app.config["MAX_QUERY_CHARS"]]
    searcher = _searcher()
    ui, _ = i18n.choose(request)
    topics = _topic_counts(_browse_rows(searcher, ui)) if searcher is not None else []
    return _render("help.html", page="help", q=q, topics=topics)


@bp.get("/articles")
def article_list():
    """Every public article once, grouped by its main topic (the folder it lives in)."""
    searcher = _searcher()
    if searcher is None:
        return _unavailable()
    ui, _ = i18n.choose(request)
    rows = _browse_rows(searcher, ui)
    sections = [(t, [r for r in rows if r["topics"][0] == t]) for t in TOPICS]
    return _render("articles.html", page="articles", sections=[(t, rs) for t, rs in sections if rs],
                   topic=None, total=len(rows))


@bp.get("/topics/<topic>")
def topic(topic: str):
    """The public articles of one topic (main or secondary)."""
    searcher = _searcher()
    if searcher is None:
        return _unavailable()
    ui, _ = i18n.choose(request)
    rows = [r for r in _browse_rows(searcher, ui) if topic in r["topics"]] if topic in TOPICS else []
    if not rows:
        return _not_found()
    return _render("articles.html", page="topic", sections=[(topic, rows)], topic=topic, total=len(rows))


@bp.get("/contact")
def contact():
    """Every way to reach support (config CONTACT). A click on one is a contact event, as everywhere."""
    sid = _sid()
    return _render("contact.html", page="contact", sid=sid, js={"sid": sid})


@bp.get("/sitemap.xml")
def sitemap():
    """Public pages and every public article version, with its translations as hreflang alternates."""
    searcher = _searcher()
    if searcher is None:
        return _unavailable()
    rows = visible_articles(searcher, "public")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    pages = [url_for("pages.help_center", _external=True), url_for("pages.article_list", _external=True),
             url_for("pages.contact", _external=True)]
    pages += [url_for("pages.topic", topic=t, _external=True) for t, _n in _topic_counts(rows)]
    articles = [{"loc": url_for("pages.article", article_id=r["id"], lang=r["lang"], _external=True),
                 "lastmod": r["updated"],
                 "alternates": [(v["lang"], url_for("pages.article", article_id=v["id"], lang=v["lang"],
                                                    _external=True)) for v in groups[r["group"]]]
                 if len(groups[r["group"]]) > 1 else []} for r in rows]
    xml = render_template("sitemap.xml", pages=pages, articles=articles)
    return Response(xml, mimetype="application/xml")


@bp.get("/robots.txt")
def robots():
    body = ("User-agent: *\nDisallow: /agent\nDisallow: /admin/\nDisallow: /api/\n"
            f"Sitemap: {url_for('pages.sitemap', _external=True)}\n")
    return Response(body, mimetype="text/plain")


@bp.get("/articles/<article_id>")
def article(article_id: str):
    lang = request.args.get("lang")
    lang = lang if lang and LANG_CODE.match(lang) else None
    sid = _sid()
    searcher = _searcher()
    if searcher is None:
        return _unavailable()
    view = article_view(searcher, article_id, lang, "public") if ARTICLE_ID.match(article_id) else None
    if view is None:
        return _not_found("not_found_title", "not_found_text")
    missing = lang if lang and lang != view["lang"] else None
    headings = _flatten_toc(view.get("toc") or [])
    return _render(
        "article.html",
        page="article",
        view=view,
        sid=sid,
        missing_lang=missing,
        toc=view["toc"] if len(headings) >= TOC_MIN_HEADINGS else [],
        js={"articleId": view["id"], "articleLang": view["lang"], "sid": sid},
    )


TOC_MIN_HEADINGS = 3  # a table of contents helps once an article has a few sections to jump between


def _flatten_toc(entries: list[dict]) -> list[dict]:
    return [x for e in entries for x in (e, *_flatten_toc(e["children"]))]


@bp.get("/agent")
def agent():
    text = request.args.get("text", "")[:5000]
    origins = [o for o in current_app.config.get("AGENT_EMBED_ORIGINS") or [] if isinstance(o, str)]
    # "More details" under an answer inserted into a reply: in the article's language, which is the customer's
    read_more = {lang: i18n.t(lang, "read_more") for lang in i18n.LANGS}
    return _render("agent.html", page="agent", text=text, key_label_key="key_label",
                   js={"embedOrigins": origins, "readMore": read_more})


@bp.get("/admin/analytics")
def dashboard():
    searcher = _searcher()
    public = sorted({r["id"] for r in visible_articles(searcher, "public")}) if searcher is not None else []
    return _render(
        "dashboard.html",
        page="dashboard",
        key_label_key="admin_key_label",
        channels=CHANNELS,
        default_channels=DEFAULT_CHANNELS,
        js={"reports": list(REPORTS), "langs": list(i18n.LANGS), "channels": list(CHANNELS),
            "defaultChannels": list(DEFAULT_CHANNELS), "publicArticles": public},
    )

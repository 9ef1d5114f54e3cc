"""Server-rendered pages: help center, article pages, agent sidebar and analytics dashboard.

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

from kb.analytics import CHANNELS, REPORTS
from kb.service import article_view

from . import i18n

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
    return {
        "email": str(c.get("email") or "").strip() or None,
        "phone": phone or None,
        "tel": re.sub(r"[^\d+]", "", phone) or None,
        "chat_url": _safe_link(c.get("chat_url")),
    }


def _switch_links(ui: str) -> list[tuple[str, str, str, bool]]:
    """(code, autonym, url, current) for the language menu; keeps the page's other query parameters."""
    args = request.args.to_dict()
    view_args = request.view_args or {}
    out = []
    for code in i18n.LANGS:
        out.append(
            (
                code,
                i18n.AUTONYMS[code],
                url_for(request.endpoint, **view_args, **{**args, "ui": code}),
                code == ui,
            )
        )
    return out


def _render(template: str, status: int = 200, page: str = "", js: dict | None = None, **ctx) -> Response:
    ui, explicit = i18n.choose(request)
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
    if explicit:
        resp.set_cookie(
            i18n.COOKIE, ui, max_age=365 * 24 * 3600, samesite="Lax", httponly=True, secure=request.is_secure
        )
    return resp


def _searcher():
    """The live searcher, or None while no index is loaded."""
    service = current_app.extensions["kb_service"]
    return service.searcher if service.ready else None


# ---------------------------------------------------------------------------- pages


@bp.get("/")
def help_center():
    q = request.args.get("q", "")[: current_app.config["MAX_QUERY_CHARS"]]
    return _render("help.html", page="help", q=q)


@bp.get("/articles/<article_id>")
def article(article_id: str):
    lang = request.args.get("lang")
    lang = lang if lang and LANG_CODE.match(lang) else None
    sid = request.args.get("sid", "")
    sid = sid if SEARCH_ID.match(sid) else "direct"
    searcher = _searcher()
    if searcher is None:
        return _render(
            "message.html",
            503,
            page="unavailable",
            title_key="unavailable_title",
            text_key="unavailable_text",
        )
    view = article_view(searcher, article_id, lang, "public") if ARTICLE_ID.match(article_id) else None
    if view is None:
        return _render(
            "message.html", 404, page="not_found", title_key="not_found_title", text_key="not_found_text"
        )
    missing = lang if lang and lang != view["lang"] else None
    return _render(
        "article.html",
        page="article",
        view=view,
        sid=sid,
        missing_lang=missing,
        js={"articleId": view["id"], "articleLang": view["lang"], "sid": sid},
    )


@bp.get("/agent")
def agent():
    text = request.args.get("text", "")[:5000]
    origins = [o for o in current_app.config.get("AGENT_EMBED_ORIGINS") or [] if isinstance(o, str)]
    return _render(
        "agent.html", page="agent", text=text, key_label_key="key_label", js={"embedOrigins": origins}
    )


@bp.get("/admin/analytics")
def dashboard():
    return _render(
        "dashboard.html",
        page="dashboard",
        key_label_key="admin_key_label",
        channels=CHANNELS,
        default_channels=DEFAULT_CHANNELS,
        js={"reports": list(REPORTS), "langs": list(i18n.LANGS), "channels": list(CHANNELS),
            "defaultChannels": list(DEFAULT_CHANNELS)},
    )

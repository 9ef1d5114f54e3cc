"""`kb check` / `kb build` on a tree with many distinct mistakes: one `path:line: message` line each.

The fixture is built in a tmp dir: a few valid articles (a source with translations, articles linking to
it) and one file per mistake. A broken source article must be reported once, not again on each of its
translations or on every link to it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import write_article

from kb.articles import check_tree

ROOT = Path(__file__).resolve().parent.parent
LINE_RE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): (?P<message>\S.*)$")


def front(aid: str, lang: str = "en", topic: str = "customs", **fields) -> str:
    """Front matter of a valid article, with ``fields`` replacing (None: dropping) or adding lines."""
    base = {"id": aid, "title": '"A title"', "lang": lang, "topics": f"[{topic}]", "countries": '["*"]',
            "audience": "public", "updated": "2026-11-01"}
    for k, v in fields.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in base.items()) + "---\n"


BODY = "## Section\n\nSome body text about the topic, long enough to be a passage.\n"


def write_raw(articles: Path, rel: str, data: str | bytes) -> Path:
    """Any bytes at articles/<rel>, for files a valid-article writer cannot produce."""
    path = articles / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# (file below articles/, its content, expected line, expected message start); lines are 1-based, the
# front matter's first key is on line 2: id 2, title 3, lang 4, topics 5, countries 6, audience 7, updated 8
MISTAKES = [
    ("claims/broken-source.en.md", front("broken-source", topic="claims", updated="2026-02-30") + BODY,
     8, "updated '2026-02-30' is not a real date (day is out of range for month)"),
    ("customs/bad-date.en.md", front("bad-date", updated="30/02/2026") + BODY,
     8, "updated must be a date YYYY-MM-DD, not '30/02/2026'"),
    ("customs/bad-lang.en.md", front("bad-lang", lang="xx") + BODY, 4, "unknown lang 'xx'"),
    ("customs/bad-topic.en.md", front("bad-topic", topics="[customs, cheese]") + BODY, 5, "unknown topic 'cheese'"),
    ("customs/no-title.en.md", front("no-title", title=None) + BODY, 2, "missing required field 'title'"),
    ("returns/dup-id.en.md", front("dup-id", topic="returns") + BODY,
     2, "duplicate id 'dup-id' in lang 'en' (also in articles/customs/dup-id.en.md)"),
    ("customs/orphan-ta.ta.md", front("orphan-ta", lang="ta", translation_of="no-such-source") + BODY,
     9, "translation_of 'no-such-source' points to no article"),
    ("customs/bad-yaml.en.md", front("bad-yaml", title="'unclosed") + BODY, 3,
     "bad YAML: while scanning a quoted scalar that is never closed"),
    ("customs/tab-indent.en.md", front("tab-indent").replace("title:", "\ttitle:", 1) + BODY,
     3, "bad YAML: found character '\\t' that cannot start any token (indent with spaces, not tabs)"),
    ("customs/indent.en.md", front("indent").replace("lang:", "  lang:", 1) + BODY,
     4, "bad YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping on line 2)"),
    ("customs/unclosed.en.md", front("unclosed").rstrip("-\n") + "\n" + BODY,
     1, "front matter is not closed: add a '---' line after it"),
    ("customs/file-name.en.md", front("other-name") + BODY, 2,
     "id 'other-name' does not match the file name 'file-name.en.md'"),
    ("customs/wrong-lang.en.md", front("wrong-lang", lang="ta") + BODY, 4,
     "lang 'ta' does not match the file name 'wrong-lang.en.md'"),
    ("customs/empty-body.en.md", front("empty-body") + "\n   \n", 10, "empty body"),
    ("customs/bad-questions.en.md", front("bad-questions", questions='\n  ta: []\n  en: ["ok"]') + BODY,
     10, "questions.ta must be a non-empty list of questions"),
    ("customs/bad-country.en.md", front("bad-country", countries="[IN, India]") + BODY, 6, "unknown country 'India'"),
    ("customs/bad-audience.en.md", front("bad-audience", audience="everyone") + BODY, 7,
     "audience must be 'public' or 'internal', not 'everyone'"),
    ("customs/expires-early.en.md", front("expires-early", effective="2026-06-01", expires="2026-01-01") + BODY,
     10, "expires 2026-01-01 must be after effective 2026-06-01"),
    ("customs/latin1.en.md", (front("latin1") + "## Café\n\nCaf").encode() + b"\xe9 au lait.\n",
     12, "invalid UTF-8 at byte"),
    ("customs/dead-link.en.md", front("dead-link") + "## Links\n\nSee [the guide](/articles/no-such-guide#top).\n",
     12, "broken link: no article with id 'no-such-guide'"),
    ("customs/dup-field.en.md", front("dup-field") .replace("audience: public\n", "audience: public\ntitle: Again\n")
     + BODY, 8, "duplicate field 'title' (also on line 3)"),
    ("customs/unknown-field.en.md", front("unknown-field", colour="red") + BODY, 9, "unknown field 'colour'"),
    ("tracking/wrong-folder.en.md", front("wrong-folder", topic="claims") + BODY, 5,
     "first topic 'claims' does not match the folder 'tracking'"),
    ("customs/notes.md", front("notes") + BODY, 1, "file name 'notes.md' must be <id>.<lang>.md"),
    ("customs/no-front.en.md", "# Just Markdown\n\nNo front matter at all.\n", 1, "missing YAML front matter"),
    ("customs/same-lang.en.md", front("same-lang", translation_of="good-source") + BODY, 9,
     "translation_of 'good-source' is in the same language"),
    ("customs/alias.en.md", front("alias", title="&t Title", countries="*t") + BODY, 6,
     "bad YAML: aliases (*name) are not allowed in front matter"),
    ("customs/bad-id.en.md", front("Bad_ID") + BODY, 2, "id 'Bad_ID' is not a slug"),
    ("out-of-scope.yaml", "en:\n  - share price\nzz:\n  - hola\n", 3, "out-of-scope: unknown language 'zz'"),
]


def build_tree(root: Path) -> Path:
    articles = root / "articles"
    # the valid part: a good source with a translation, and a duplicate partner
    write_article(articles, "good-source", "Good source", "Text. See [broken](/articles/broken-source).")
    write_raw(articles, "customs/good-source-ta.ta.md", front("good-source-ta", lang="ta",
                                                              translation_of="good-source") + BODY)
    write_article(articles, "dup-id", "Duplicate one", "Text.")
    # the broken source's translations and an article linking to it: not wrong themselves
    for lang in ("ta", "ml", "hi", "bn", "am"):
        write_raw(articles, f"claims/broken-source-{lang}.{lang}.md",
                  front(f"broken-source-{lang}", lang=lang, topic="claims", translation_of="broken-source")
                  + "## Section\n\nText linking to [the source](/articles/broken-source).\n")
    for rel, data, _line, _msg in MISTAKES:
        write_raw(articles, rel, data)
    return articles


def run_kb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kb.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})


def _expected() -> list[str]:
    return sorted(f"articles/{rel}:{line}: {msg}" for rel, _d, line, msg in MISTAKES)


def _check_lines(lines: list[str]) -> None:
    assert len({m[0].split("/", 1)[0] for m in MISTAKES}) > 1
    assert len(lines) == len(MISTAKES), "\n".join(lines)
    for line in lines:
        assert LINE_RE.match(line), line
    by_path = {LINE_RE.match(line)["path"]: line for line in lines}
    assert len(by_path) == len(MISTAKES), "\n".join(lines)  # one line per mistaken file, none for the others
    for want in _expected():
        path = want.split(":", 1)[0]
        assert path in by_path, (want, lines)
        assert by_path[path].startswith(want), (by_path[path], want)


def test_many_distinct_mistakes_one_line_each(tmp_path):
    assert len(MISTAKES) >= 20
    build_tree(tmp_path)
    r = run_kb("check", "--articles", str(tmp_path / "articles"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    _check_lines(r.stdout.splitlines())
    assert r.stderr.strip() == f"{len(MISTAKES)} problem(s) in {tmp_path / 'articles'}"


def test_build_refuses_with_the_same_lines(tmp_path):
    build_tree(tmp_path)
    index = tmp_path / "index"
    r = run_kb("build", "--articles", str(tmp_path / "articles"), "--index", str(index), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    _check_lines(r.stdout.splitlines())
    assert "fix them before building" in r.stderr
    assert not (index / "CURRENT").exists()


def test_each_mistake_alone_is_its_only_line(tmp_path):
    """Every mistake in a tree of its own: exactly its line (a mistake never hides behind another)."""
    for i, (rel, data, line, msg) in enumerate(MISTAKES):
        root = tmp_path / str(i)
        articles = root / "articles"
        write_article(articles, "good-source", "Good source", "Text.")
        write_article(articles, "dup-id", "Duplicate one", "Text.")
        write_raw(articles, rel, data)
        probs = [str(p) for p in check_tree(articles)[1]]
        assert probs and len(probs) == 1 and probs[0].startswith(f"articles/{rel}:{line}: {msg}"), (rel, probs)


def test_broken_source_reported_once(tmp_path):
    articles = tmp_path / "articles"
    write_raw(articles, "claims/src.en.md", front("src", topic="claims", updated="2026-13-01") + BODY)
    for lang in ("ta", "ml", "hi", "bn", "am"):
        write_raw(articles, f"claims/src-{lang}.{lang}.md", front(f"src-{lang}", lang=lang, topic="claims",
                                                                  translation_of="src")
                  + "## S\n\n[source](/articles/src)\n")
    articles_, probs = check_tree(articles)
    assert [str(p) for p in probs] == [
        "articles/claims/src.en.md:8: updated '2026-13-01' is not a real date (month must be in 1..12)"]
    assert len(articles_) == 5
    # once the source is fixed, the tree is clean: the translations were never wrong
    write_raw(articles, "claims/src.en.md", front("src", topic="claims") + BODY)
    assert check_tree(articles)[1] == []


def test_question_item_line(tmp_path):
    articles = tmp_path / "articles"
    text = front("question-item").replace("updated: 2026-11-01\n", "updated: 2026-11-01\nquestions:\n  en:\n    - fine\n    - 12\n")
    write_raw(articles, "customs/question-item.en.md", text + BODY)
    assert [str(p) for p in check_tree(articles)[1]] == [
        "articles/customs/question-item.en.md:12: questions.en: each question must be non-empty text"]


def test_bundled_articles_are_clean():
    r = run_kb("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: ")

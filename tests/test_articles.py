"""Loader and `kb check`: every error kind with its exact path:line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kb.articles import check_tree

GOOD = """---
id: {id}
title: "A title"
lang: {lang}
topics: [customs]
countries: ["*"]
audience: public
updated: 2026-11-01
{extra}---
## Section

Body text with a [link](/articles/{link}).
"""


def write(root: Path, name: str, text: str | bytes, folder: str = "customs") -> Path:
    d = root / "articles" / folder
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def problems(root: Path) -> list[str]:
    return [str(p) for p in check_tree(root / "articles")[1]]


def test_valid_tree_has_no_problems(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra="", link="beta"))
    write(tmp_path, "beta.en.md", GOOD.format(id="beta", lang="en", extra="", link="alpha"))
    write(tmp_path, "alpha-ta.ta.md", GOOD.format(id="alpha-ta", lang="ta", extra="translation_of: alpha\n",
                                                  link="alpha"))
    articles, probs = check_tree(tmp_path / "articles")
    assert probs == []
    assert {a.id for a in articles} == {"alpha", "beta", "alpha-ta"}
    assert next(a for a in articles if a.id == "alpha-ta").group == "alpha"


@pytest.mark.parametrize("text, expected", [
    (GOOD.format(id="alpha", lang="en", extra="bad: [unclosed\n", link="alpha"),
     "articles/customs/alpha.en.md:9: bad YAML"),  # the unclosed line
    (GOOD.format(id="alpha", lang="xx", extra="", link="alpha"),
     "articles/customs/alpha.en.md:4: unknown lang 'xx'"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace("topics: [customs]", "topics: [cheese]"),
     "articles/customs/alpha.en.md:5: unknown topic 'cheese'"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace('["*"]', "[XX]"),
     "articles/customs/alpha.en.md:6: unknown country 'XX'"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace("audience: public", "audience: secret"),
     "articles/customs/alpha.en.md:7: audience must be 'public' or 'internal'"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace("updated: 2026-11-01", "updated: soon"),
     "articles/customs/alpha.en.md:8: updated must be a date"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace('title: "A title"\n', ""),
     "articles/customs/alpha.en.md:2: missing required field 'title'"),
    (GOOD.format(id="alpha", lang="en", extra="colour: red\n", link="alpha"),
     "articles/customs/alpha.en.md:9: unknown field 'colour'"),
    (GOOD.format(id="alpha", lang="en", extra="", link="nowhere"),
     "articles/customs/alpha.en.md:12: broken link: no article with id 'nowhere'"),
    (GOOD.format(id="alpha", lang="en", extra="translation_of: ghost\n", link="alpha"),
     "articles/customs/alpha.en.md:9: translation_of 'ghost' points to no article"),
    (GOOD.format(id="alpha", lang="en", extra="", link="alpha").split("## Section")[0],
     "articles/customs/alpha.en.md:10: empty body"),
    ("no front matter here\n", "articles/customs/alpha.en.md:1: missing YAML front matter"),
    (b"---\nid: alpha\n\xff\xfe title\n---\n", "articles/customs/alpha.en.md:3: invalid UTF-8"),
    (b"\x00\x01binary", "articles/customs/alpha.en.md:1: binary file"),
    ("---\nid: alpha\ntitle: x\n" + "topics: " + "[" * 200 + "]" * 200 + "\n---\nbody\n",
     "articles/customs/alpha.en.md:"),
])
def test_each_error_kind(tmp_path, text, expected):
    write(tmp_path, "alpha.en.md", text)
    probs = problems(tmp_path)
    assert any(p.startswith(expected) for p in probs), probs


QUESTIONS = 'questions:\n  ta: ["பார்சல் சுங்கத்தில் நிற்கிறது", "customs hold eppadi"]\n  am: ["ዕቃዬ ጉምሩክ ላይ ተይዟል"]\n'


def test_questions_parsed_per_language(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra=QUESTIONS, link="alpha"))
    articles, probs = check_tree(tmp_path / "articles")
    assert probs == []
    assert articles[0].questions == {"ta": ["பார்சல் சுங்கத்தில் நிற்கிறது", "customs hold eppadi"],
                                     "am": ["ዕቃዬ ጉምሩክ ላይ ተይዟል"]}


@pytest.mark.parametrize("extra, expected", [
    ("questions: [one, two]\n", "9: questions must map a language code to a list"),
    ("questions:\n  xx: [hello]\n", "10: questions: unknown language 'xx'"),
    ("questions:\n  ta: []\n", "10: questions.ta must be a non-empty list"),
    ("questions:\n  ta: hello\n", "10: questions.ta must be a non-empty list"),
    ("questions:\n  ta:\n    - one\n    - ''\n", "12: questions.ta: each question must be non-empty text"),
    ("questions:\n  ta:\n    - one\n    - [nested]\n", "12: questions.ta: each question must be non-empty text"),
    ("questions:\n  ta:\n    - same\n    - Same\n", "12: questions.ta: duplicate question 'Same'"),
    ("questions:\n  en:\n    - " + "x" * 201 + "\n", "11: questions.en: question longer than 200"),
])
def test_questions_errors_name_their_line(tmp_path, extra, expected):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra=extra, link="alpha"))
    probs = problems(tmp_path)
    assert any(p.startswith("articles/customs/alpha.en.md:" + expected) for p in probs), probs


def test_questions_only_on_the_source_article(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra="", link="alpha"))
    write(tmp_path, "alpha-ta.ta.md", GOOD.format(id="alpha-ta", lang="ta", extra="translation_of: alpha\n" + QUESTIONS,
                                                  link="alpha"))
    probs = problems(tmp_path)
    assert probs == ["articles/customs/alpha-ta.ta.md:10: questions belong in the source article 'alpha' "
                     "(one list per language there)"], probs


def test_out_of_scope_file_validated_with_lines(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra="", link="alpha"))
    oos = tmp_path / "articles" / "out-of-scope.yaml"
    oos.write_text('# comment\nen:\n  - "share price today"\nxx:\n  - "hola"\nta:\n  - "மழை"\n  - "மழை"\n')
    assert problems(tmp_path) == [
        "articles/out-of-scope.yaml:4: out-of-scope: unknown language 'xx': use an ISO 639-1 code such as "
        "en, ml, bn, ta, am, hi",
        "articles/out-of-scope.yaml:8: out-of-scope.ta: duplicate question 'மழை'"]
    oos.write_text("en: [unclosed\n")
    assert problems(tmp_path)[0].startswith("articles/out-of-scope.yaml:2: bad YAML")
    oos.write_text('en: ["share price today", "weather tomorrow"]\n')
    assert problems(tmp_path) == []
    from kb.articles import check_out_of_scope

    assert check_out_of_scope(tmp_path / "articles") == ({"en": ["share price today", "weather tomorrow"]}, [])


def test_duplicate_id_and_lang(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra="", link="alpha"))
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra="", link="alpha").replace(
        "[customs]", "[claims]"), folder="claims")
    probs = problems(tmp_path)
    assert any("duplicate id 'alpha' in lang 'en'" in p for p in probs), probs


def test_huge_file_is_refused_without_reading_it_all(tmp_path):
    write(tmp_path, "alpha.en.md", "---\n" + "x" * 10_500_000)
    assert problems(tmp_path) == ["articles/customs/alpha.en.md:1: file too large: 10.5 MB (limit 1 MB)"]


def test_all_problems_reported_at_once(tmp_path):
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="zz", extra="", link="nowhere"))
    write(tmp_path, "beta.en.md", b"\x00")
    probs = problems(tmp_path)
    assert len(probs) >= 2
    assert any("alpha.en.md" in p for p in probs) and any("beta.en.md" in p for p in probs)


def test_cli_check_exit_codes_and_no_traceback(tmp_path):
    write(tmp_path, "alpha.en.md", b"\xff\xfe\x00garbage")
    r = subprocess.run([sys.executable, "-m", "kb.cli", "check", "--articles", str(tmp_path / "articles")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert "alpha.en.md:1: binary file" in r.stdout
    write(tmp_path, "alpha.en.md", GOOD.format(id="alpha", lang="en", extra=QUESTIONS, link="alpha"))
    r = subprocess.run([sys.executable, "-m", "kb.cli", "check", "--articles", str(tmp_path / "articles")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: 1 source article(s) have no en questions: alpha" in r.stdout
    assert "no ta questions" not in r.stdout and "no am questions" not in r.stdout

"""Chunking boundaries: one passage per section, 60-250 words, long sections split on paragraphs."""

from __future__ import annotations

import datetime as dt

from kb.articles import Article
from kb.passages import MAX_WORDS, anchor_for, split_article


def article(body: str) -> Article:
    return Article(id="demo", lang="en", title="Demo title", topics=["customs"], countries=["*"], audience="public",
                   updated=dt.date(2026, 11, 1), body=body, path="demo.en.md")


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def test_one_passage_per_section_with_heading_path_and_anchor():
    body = f"## First part\n\n{words(80)}\n\n## Second part\n\n### Sub step\n\n{words(90, 'step')}\n"
    ps = split_article(article(body))
    assert [p.heading_path for p in ps] == [["First part"], ["Second part", "Sub step"]]
    assert ps[1].anchor == anchor_for("Sub step") == "sub-step"
    assert ps[0].embed_text.startswith("Demo title — First part\n")
    assert all(p.article_id == "demo" and p.lang == "en" for p in ps)


def test_long_section_split_on_paragraph_boundaries():
    paras = [words(100, f"p{i}") for i in range(6)]
    ps = split_article(article("## Long\n\n" + "\n\n".join(paras)))
    assert len(ps) == 3
    for p in ps:
        assert len(p.text.split()) <= MAX_WORDS
        # no paragraph is cut in half: every paragraph's words stay in one passage
        for i in range(6):
            if f"p{i}" in p.text:
                assert p.text.count(f"p{i}") == 100


def test_short_section_is_folded_into_previous():
    body = f"## Main\n\n{words(30)}\n\n## Tiny\n\n{words(10, 'tiny')}\n\n## Next\n\n{words(240, 'next')}"
    ps = split_article(article(body))
    assert len(ps) == 2
    assert "tiny" in ps[0].text and "Tiny" in ps[0].text
    assert ps[1].heading_path == ["Next"]


def test_markdown_is_reduced_to_text():
    ps = split_article(article("## Links\n\nSee [the HS guide](/articles/hs-codes) and **bold** text. " + words(60)))
    assert "the HS guide" in ps[0].text and "/articles/" not in ps[0].text and "**" not in ps[0].text


def test_huge_paragraph_is_split_by_sentence():
    sentences = " ".join(f"Sentence {i} {words(20)}." for i in range(40))
    ps = split_article(article("## Wall\n\n" + sentences))
    assert len(ps) >= 4 and all(len(p.text.split()) <= MAX_WORDS for p in ps)

"""The bundled knowledge base and labelled queries meet the content bar."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from kb.articles import check_tree

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_LANGS = ("ml", "bn", "ta", "am", "hi")


def test_kb_check_passes_on_the_whole_tree():
    articles, problems = check_tree(ROOT / "articles")
    assert problems == [], "\n".join(map(str, problems))
    en_public = [a for a in articles if a.lang == "en" and a.audience == "public"]
    internal = [a for a in articles if a.audience == "internal"]
    assert len(en_public) >= 60 and len(internal) >= 12
    sources = {a.translation_of for a in articles if a.translation_of}
    assert len(sources) >= 20
    for src in sources:
        langs = {a.lang for a in articles if a.translation_of == src}
        assert set(PRODUCT_LANGS) <= langs, (src, langs)


def test_labelled_queries_counts():
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    ids = {a.id: a for a in check_tree(ROOT / "articles")[0]}
    per_lang = Counter(r["lang"] for r in rows)
    for lang in ("en", *PRODUCT_LANGS):
        assert per_lang[lang] >= 40, (lang, per_lang[lang])
    assert sum(1 for r in rows if not r["relevant"]) >= 30
    translated = {a.translation_of for a in ids.values() if a.translation_of}
    for lang in PRODUCT_LANGS:
        english_only = [r for r in rows if r["lang"] == lang and r["relevant"]
                        and all(k not in translated for k, g in r["relevant"].items() if g == 2)]
        assert len(english_only) >= 10, lang
    for r in rows:
        assert set(r) >= {"id", "text", "lang", "relevant", "note"}
        for k, grade in r["relevant"].items():
            assert k in ids and ids[k].lang == "en" and grade in (1, 2), (r["id"], k)
    assert len({r["id"] for r in rows}) == len(rows)
    paraphrase = sum(1 for r in rows if "paraphrase" in r["note"])
    assert paraphrase >= 0.15 * len(rows) * 0.8

"""Retrieval with the real model: cross-lingual smoke test, tokenisation, language, filters, answers."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from kb.embedder import HashEncoder
from kb.index import Bundle, build
from kb.langs import LangGuess, detect, romanized_vocabulary
from kb.lexical import LexicalIndex, matching_spans, normalize, tokenize
from kb.search import Calibration, Filters, Searcher


@pytest.mark.parametrize("lang, word, inflected", [
    ("ml", "പാഴ്സൽ", "പാഴ്സലിന്റെ"),      # chillu letter vs consonant + virama
    ("ta", "பார்சல்", "பார்சலை"),
    ("bn", "পার্সেল", "পার্সেলের"),
    ("am", "እቃ", "እቃዎች"),
    ("hi", "पार्सल", "पार्सलों"),
])
def test_indic_and_ethiopic_words_match_themselves_and_inflections(tmp_path, lang, word, inflected):
    texts = [f"{word} one", f"{inflected} two", "unrelated text"]
    LexicalIndex.build(tmp_path / "lex.sqlite", texts)
    lex = LexicalIndex(tmp_path / "lex.sqlite")
    hits = {i for i, _s in lex.search(word)}
    assert hits == {0, 1}, (lang, hits)
    assert matching_spans(f"see {inflected} here", word)


def test_normalisation_is_consistent():
    # old-style chillu (n + virama + ZWJ) and atomic chillu tokenise identically; ZWNJ is dropped
    assert tokenize("അവന\u0d4d\u200d") == tokenize("അവ\u0d7b") == [normalize("അവന\u0d4d")]
    assert tokenize("क्\u200dष") == tokenize("क्ष")
    assert tokenize("Café ½") == ["café", "½"] or tokenize("Café ½")[0] == "café"


@pytest.mark.parametrize("text, lang, romanized", [
    ("my parcel is stuck in customs", "en", False),
    ("എന്റെ പാഴ്സൽ എവിടെ?", "ml", False),
    ("আমার পার্সেল কোথায়?", "bn", False),
    ("என் பார்சல் எங்கே?", "ta", False),
    ("እቃዬ የት ነው?", "am", False),
    ("मेरा पार्सल कहाँ है?", "hi", False),
    ("mera parcel kab aayega", "hi", True),
    ("amar parcel kobe asbe", "bn", True),
    ("ente parcel evide ethi", "ml", True),
    ("en parcel enga irukku", "ta", True),
    ("HS code എന്താണ്", "ml", False),
    # a few native letters among many Latin ones still name the reader's language
    ("tracking ላይ 'Held: action required' ይላል", "am", False),
    ("out for delivery के बाद address change हो सकता है?", "hi", False),
    ("Café in Zürich, 2 kg", "en", False),
])
def test_language_detection(text, lang, romanized):
    g = detect(text)
    assert (g.lang, g.romanized) == (lang, romanized)


def test_unsure_latin_text_counts_as_english_without_word_matching():
    g = detect("Wer sang die Nationalhymne beim Super Bowl 50?")  # German the detector is unsure of
    assert (g.lang, g.certain) == ("en", False)
    assert detect("how long does customs clearance take for a parcel").certain
    assert detect("¿Cuánto tarda un envío de Madrid a Ciudad de México por mensajería?").lang == "es"


def test_restricted_identifiers_classify_as_py3langid_restricted_per_call():
    """kb.langs builds one restricted identifier per language list; py3langid's own set_languages (what it did
    per query before) must give the same label and probability, also with threads classifying at once."""
    from concurrent.futures import ThreadPoolExecutor

    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from kb.langs import DEVANAGARI_LANGS, LATIN_LANGS, _classify

    texts = {tuple(LATIN_LANGS): [
        "where can I pay the import duties for my parcel", "¿Cuánto tarda un envío de Madrid a Ciudad de México?",
        "Combien coûte l'envoi d'un colis en Allemagne", "Wie lange dauert die Zollabfertigung für ein Paket",
        "Quanto custa enviar uma encomenda para Portugal", "Berapa lama pengiriman paket ke Jakarta",
        "Paketim gümrükte bekliyor, ne yapmalıyım", "Kifurushi changu kimekwama forodhani",
        "Ile kosztuje wysyłka paczki do Polski", "Hoeveel kost het om een pakket te versturen"],
        tuple(DEVANAGARI_LANGS): ["मेरा पार्सल सीमा शुल्क में अटका हुआ है, मुझे क्या करना चाहिए",
                                  "माझे पार्सल कस्टममध्ये अडकले आहे, मी काय करू", "मेरो पार्सल भन्सारमा अड्किएको छ"]}
    ref = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    expected = {}
    for langs, group in texts.items():
        ref.set_languages(list(langs))
        for t in group:
            lang, prob = ref.classify(t)
            expected[t] = (langs, lang, float(prob))
    assert len({v[1] for v in expected.values()}) >= 8  # the texts are told apart, not all one label
    jobs = [t for t in expected for _ in range(8)]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda t: _classify(t, list(expected[t][0])), jobs))
    for t, (lang, prob) in zip(jobs, got, strict=True):
        assert lang == expected[t][1] and prob == pytest.approx(expected[t][2], abs=1e-6), t


def test_romanized_words_learnt_from_questions():
    vocab = romanized_vocabulary(
        [("am", "telebirr be gumruk kefya yichalal?"), ("am", "ቀረጥ በቴሌብር"), ("ta", "parcel customs la maatikichu"),
         ("ml", "parcel customs-il pidichu"), ("en", "pay duties with telebirr")],
        english=["Your parcel is held by customs until duties are paid."])
    assert vocab["am"] == {"gumruk", "kefya", "yichalal"}           # native-script and English words excluded
    assert "parcel" not in vocab.get("ta", set()) and "maatikichu" in vocab["ta"]
    assert detect("kefya gumruk lay new") == detect("kefya gumruk lay new", None)  # built-in lists alone
    assert detect("gumruk kefya yichalal", vocab) == LangGuess("am", "Latin", True)
    assert detect("please pay the duties online", vocab).lang == "en"


def test_amharic_homophone_letters_fold_for_lexical_matching(tmp_path):
    LexicalIndex.build(tmp_path / "lex.sqlite", ["ሐኪም ጋር", "ፀሐይ ሠላም", "unrelated"])
    lex = LexicalIndex(tmp_path / "lex.sqlite")
    assert {i for i, _s in lex.search("ሀኪም")} == {0}
    assert {i for i, _s in lex.search("ጸሀይ ሰላም")} == {1}
    assert tokenize("ዐይን ሃገር") == tokenize("አይን ሀገር")


def test_confidence_model_and_its_fallback(tmp_path):
    cal = Calibration({"z": 0.2, "margin": 100.0}, -2.0, {"z": 1.0}, -3.0)
    assert cal.confidence({"z": 1.0, "margin": 0.05}) == pytest.approx(1 / (1 + math.exp(-(0.2 + 5.0 - 2.0))))
    # no out-of-scope examples in this knowledge base: the model fitted without the margin
    assert cal.confidence({"z": 1.0}) == pytest.approx(0.5 - 0.5 * math.tanh(1.0))
    # a card below the first one: its gap (<= 0) times gap_weight lowers it
    per_card = Calibration({"z": 0.2, "margin": 100.0}, -2.0, {"z": 1.0}, -3.0, gap_weight=2.0)
    assert per_card.confidence({"z": 1.0, "margin": 0.05, "gap": -1.0}) == \
        pytest.approx(1 / (1 + math.exp(-(0.2 + 5.0 - 2.0 - 2.0))))
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"weights": {"z": 0.5, "bogus": 9}, "bias": -1.0, "gap_weight": 1.5,
                                "fallback": {"weights": {"z": 2.0}, "bias": -4.0}}))
    assert Calibration.load(path) == Calibration({"z": 0.5}, -1.0, {"z": 2.0}, -4.0, gap_weight=1.5)
    path.write_text("{broken")
    assert Calibration.load(path) == Calibration()


@pytest.mark.slow
@pytest.mark.parametrize("query", [
    "লিথিয়াম ব্যাটারি বিমানে পাঠানো যায়?",          # bn
    "லித்தியம் பேட்டரியை விமானத்தில் அனுப்பலாமா?",     # ta
    "ലിഥിയം ബാറ്ററി വിമാനത്തിൽ അയക്കാമോ?",              # ml
    "የሊቲየም ባትሪ በአውሮፕላን መላክ ይቻላል?",               # am
    "क्या लिथियम बैटरी हवाई जहाज़ से भेज सकते हैं?",     # hi
])
def test_cross_lingual_smoke(tmp_path, st_encoder, query):
    """English-only fixture passages; a question in each language ranks the matching passage first."""
    d = tmp_path / "articles" / "shipping-rules"
    d.mkdir(parents=True)
    topics = {
        "batteries": "Lithium batteries on aircraft: power banks and spare lithium batteries must travel in hand "
                     "luggage rules; we ship them only inside equipment, up to 100 Wh per battery.",
        "perfume": "Perfume and cologne contain alcohol and are flammable liquids; ship up to 100 ml per bottle.",
        "invoice": "A commercial invoice lists the seller, buyer, goods, HS codes and values for customs.",
        "volumetric": "Volumetric weight is length times width times height divided by 5000.",
    }
    for slug, text in topics.items():
        (d / f"{slug}.en.md").write_text(
            f"---\nid: {slug}\ntitle: \"{slug}\"\nlang: en\ntopics: [shipping-rules]\ncountries: [\"*\"]\n"
            f"audience: public\nupdated: 2026-11-01\n---\n## About\n\n{text}\n")
    build(tmp_path / "articles", tmp_path / "index", st_encoder)
    s = Searcher(Bundle.open(tmp_path / "index"), st_encoder)
    res = s.search(query, limit=4)
    assert res["results"][0]["article_id"] == "batteries"
    assert res["results"][0]["lang_fallback"] is True


def _tiny(tmp_path, extra_front: dict[str, str]) -> Searcher:
    d = tmp_path / "articles" / "customs"
    d.mkdir(parents=True)
    base = "---\nid: {id}\ntitle: \"{title}\"\nlang: {lang}\ntopics: [{topic}]\ncountries: [{c}]\naudience: {aud}\n" \
           "updated: {upd}\n{extra}---\n## Body\n\n{body}\n"
    rows = [
        dict(id="hold-guide", title="Customs hold guide", lang="en", topic="customs", c='"*"', aud="public",
             upd="2026-11-01", extra="", body="customs hold release documents"),
        dict(id="hold-guide-ta", title="சுங்க நிறுத்தம்", lang="ta", topic="customs", c='"*"', aud="public",
             upd="2026-11-01", extra="translation_of: hold-guide\n", body="சுங்க நிறுத்தம் ஆவணங்கள்"),
        dict(id="broker-steps", title="Broker steps", lang="en", topic="customs", c='"*"', aud="internal",
             upd="2026-11-01", extra="", body="customs hold broker internal steps"),
        dict(id="india-rules", title="India customs hold", lang="en", topic="customs", c="IN", aud="public",
             upd="2020-01-01", extra="", body="customs hold india kyc"),
        dict(id="old-rule", title="Old customs hold rule", lang="en", topic="customs", c='"*"', aud="public",
             upd="2026-11-01", extra="expires: 2026-01-31\n", body="customs hold expired rule"),
    ]
    for r in rows:
        (d / f"{r['id']}.{r['lang']}.md").write_text(base.format(**r, **extra_front))
    enc = HashEncoder()
    build(tmp_path / "articles", tmp_path / "index", enc)
    return Searcher(Bundle.open(tmp_path / "index"), enc)


def test_filters_grouping_and_fallback(tmp_path):
    s = _tiny(tmp_path, {})
    today = dt.date(2026, 11, 25)
    pub = s.search("customs hold", Filters(today=today), limit=10)
    ids = [r["article_id"] for r in pub["results"]]
    assert "broker-steps" not in ids and "old-rule" not in ids          # audience, expiry
    assert len([r for r in pub["results"] if r["group"] == "hold-guide"]) == 1   # one card per group
    agent = s.search("customs hold", Filters(audience="internal", today=today), limit=10)
    assert "broker-steps" in [r["article_id"] for r in agent["results"]]
    us = s.search("customs hold", Filters(countries=["US"], today=today), limit=10)
    assert "india-rules" not in [r["article_id"] for r in us["results"]]    # IN-only article filtered
    india = s.search("customs hold", Filters(countries=["IN"], today=today), limit=10)
    assert "india-rules" in [r["article_id"] for r in india["results"]]
    assert next(r for r in india["results"] if r["article_id"] == "india-rules")["stale"] is True
    ta = s.search("சுங்க நிறுத்தம்", Filters(today=today), limit=10)
    card = next(r for r in ta["results"] if r["group"] == "hold-guide")
    assert card["article_id"] == "hold-guide-ta" and card["lang_fallback"] is False
    assert "<mark>" in card["snippet_html"]
    page = s.search("customs hold", Filters(today=today), limit=1, offset=1)
    assert page["results"] and page["results"][0]["group"] != pub["results"][0]["group"]


def test_snippet_html_is_escaped(tmp_path):
    s = _tiny(tmp_path, {})
    res = s.search("<script>alert(1)</script> customs", Filters(), limit=3)
    for r in res["results"]:
        assert "<script>" not in r["snippet_html"]


@pytest.mark.slow
def test_no_answer_and_confident_answer_on_real_kb(searcher):
    good = searcher.search("how do I ship a phone with a lithium battery", Filters())
    assert good["results"][0]["group"] in {"lithium-batteries", "shipping-electronics-and-phones"}
    assert not good["no_confident_answer"]
    bad = searcher.search("quantum physics homework help", Filters())
    assert bad["no_confident_answer"]
    assert bad["top_confidence"] < good["top_confidence"]


@pytest.mark.parametrize("text, query, marked", [
    # a short Latin term is exact, as in the lexical leg: "US" is not a prefix of "usually" or "USDA";
    # typed in capitals it is an acronym and leaves the pronoun "us" alone
    ("We usually ship to the US. USDA rules apply to us.", "ship to the US", ["ship", "US"]),
    ("We usually ship to the US. USDA rules apply to us.", "US", ["US"]),
    ("We usually ship to the US. USDA rules apply to us.", "us", ["US", "us"]),
    # function words of the product languages are never marked, in the query or in the text
    ("मेरा पार्सल कहाँ है? पार्सलों की स्थिति यहाँ है।", "मेरा पार्सल कहाँ है", ["पार्सल", "पार्सलों"]),
    ("என்ன இல்லை, யார் அதைக் கொடுக்க வேண்டும் என்று பார்சலை", "என் பார்சல் என்ன ஆனது", ["பார்சலை"]),
    ("എന്റെ പാഴ്സൽ എവിടെ ആണ്? പാഴ്സലിന്റെ നില", "എന്റെ പാഴ്സൽ എവിടെ ആണ്", ["പാഴ്സൽ", "പാഴ്സലിന്റെ"]),
    ("আমার পার্সেল কোথায় আছে? পার্সেলের অবস্থা", "আমার পার্সেল কোথায়", ["পার্সেল", "পার্সেলের"]),
    # Amharic: prepositions written as prefixes, suffixes, and the stem's last vowel changing
    ("የጉምሩክ ማቆያ ማለት ጉምሩክ ወይም በጉምሩክ ላይ ነው", "ጉምሩክ ላይ ነው", ["የጉምሩክ", "ጉምሩክ", "በጉምሩክ"]),
    ("እቃዎን በሳጥን ውስጥ ያድርጉ። እቃዎች ሁሉ", "እቃዬ የት ነው?", ["እቃዎን", "እቃዎች"]),
    ("ሽቶዎችን ለመላክ የመላኪያ ደንብ", "ሽቶ እንዴት መላክ እችላለሁ", ["ሽቶዎችን", "ለመላክ", "የመላኪያ"]),
    ("है क्या என்ன ምን ነው", "है क्या என்ன ምን ነው", []),
])
def test_highlights_mark_content_words_only(text, query, marked):
    assert [text[a:b] for a, b in matching_spans(text, query)] == marked


@pytest.mark.slow
@pytest.mark.parametrize("query", [
    "ጉምሩክ ላይ የተያዘ እቃዬን እንዴት ማስለቀቅ እችላለሁ?", "የሊቲየም ባትሪ እንዴት መላክ እችላለሁ?",
    "मेरा पार्सल कहाँ है", "சுங்கத்தில் நிறுத்தி வைக்கப்பட்ட என் பார்சல் என்ன ஆனது", "can I send batteries to the US",
])
def test_real_snippets_mark_no_function_words(searcher, query):
    from kb.lexical import HIGHLIGHT_SKIP

    res = searcher.search(query, Filters(), limit=10)
    marks = [m for r in res["results"] for m in re.findall(r"<mark>(.*?)</mark>", r["snippet_html"])]
    assert marks, query  # every one of these queries shares words with its answers
    assert not [m for m in marks if normalize(m) in HIGHLIGHT_SKIP], marks
    assert "usually" not in marks and "USDA" not in marks
    for r in res["results"]:
        assert len(r["snippet"].split()) >= 5, r["snippet"]  # never a two-word list label alone


def test_passage_scores_mix_both_prefixes_and_headings():
    from kb.search import passage_scores

    rng = np.random.default_rng(1)
    unit = lambda m: m / np.linalg.norm(m, axis=-1, keepdims=True)  # noqa: E731
    vecs, qstyle, heads, q = unit(rng.normal(size=(6, 8))), unit(rng.normal(size=(6, 8))), \
        unit(rng.normal(size=(6, 8))), unit(rng.normal(size=8))
    has_head = np.array([True, False, True, False, True, False])
    hw = np.full(6, 0.2, dtype=np.float32)
    full = passage_scores(q, vecs, qstyle, heads, has_head, hw, 0.5)
    cos = 0.5 * vecs @ q + 0.5 * qstyle @ q
    assert np.allclose(full, np.where(has_head, 0.8 * cos + 0.2 * heads @ q, cos), atol=1e-6)
    # without query-style vectors (or at weight 0) it is the passage cosine alone
    assert np.allclose(passage_scores(q, vecs, None, heads, has_head, np.zeros(6), 0.5), vecs @ q, atol=1e-6)
    assert np.allclose(passage_scores(q, vecs, qstyle, heads, has_head, np.zeros(6), 0.0), vecs @ q, atol=1e-6)
    # the ANN path scores only the proposed rows, identically
    pool = np.array([1, 4])
    part = passage_scores(q, vecs, qstyle, heads, has_head, hw, 0.5, pool)
    assert np.allclose(part[pool], full[pool]) and (np.delete(part, pool) == -1).all()


def _without_stored_probe(bundle: Bundle) -> Bundle:
    """The same bundle as one built before `kb build` stored the domain probe (no manifest entry)."""
    import dataclasses

    return dataclasses.replace(bundle, manifest={k: v for k, v in bundle.manifest.items() if k != "domain_probe"})


@pytest.mark.slow
def test_stored_domain_probe_equals_the_in_process_fit_and_gives_the_same_confidences(searcher):
    """`kb build` fits the probe on the bundle's question vectors; a searcher reading it scores like one that
    fits it when it loads (the fallback for bundles built before), card for card, on labelled queries."""
    from kb.domain import fit_domain_probe

    entry = searcher.bundle.manifest["domain_probe"]
    assert (entry["questions"], entry["examples"]) == (len(searcher.q_vectors), len(searcher.oos_vectors))
    assert len(searcher.oos_vectors) >= 200 and searcher.domain is not None
    w, b = fit_domain_probe(searcher.q_vectors, searcher.oos_vectors)
    np.testing.assert_allclose(searcher.domain[0], w, rtol=1e-5, atol=1e-6)
    assert abs(searcher.domain[1] - b) < 1e-6
    fitted = Searcher(_without_stored_probe(searcher.bundle), searcher.encoder, searcher.config)
    np.testing.assert_allclose(fitted.domain[0], w, rtol=1e-5, atol=1e-6)
    rows = [json.loads(line) for line in open(Path(__file__).parent / "data/queries.jsonl", encoding="utf-8") if line.strip()]
    picked = [next(q for q in rows if q["lang"] == lang and q["relevant"]) for lang in ("en", "am", "ml", "ta")]
    picked += [q for q in rows if not q["relevant"]][:3]  # no-answer queries: the probe matters most there
    flagged = []
    for q in picked:
        a, c = (x.search(q["text"], Filters(), limit=5, features=True) for x in (searcher, fitted))
        assert [r["group"] for r in a["results"]] == [r["group"] for r in c["results"]], q["text"]
        assert [r["confidence"] for r in a["results"]] == pytest.approx([r["confidence"] for r in c["results"]],
                                                                        abs=2e-4), q["text"]
        assert "domain" in a["results"][0]["features"]
        assert a["no_confident_answer"] == c["no_confident_answer"]
        flagged.append(a["no_confident_answer"])
    assert not any(flagged[:4]) and any(flagged[4:])  # answers found, and a no-answer query told apart


_WORKER = """
import json, sys, tempfile
from search_api import create_app
app = create_app({"INDEX_DIR": sys.argv[1], "DB_PATH": tempfile.mkdtemp() + "/kb.sqlite3",
                  "RATE_LIMIT": "100000/minute", "WATCH_INTERVAL": 0})
from kb.langs import _identifier
ready = set(sys.modules)
langid_ready = _identifier.cache_info().currsize
r = app.test_client().get("/api/v1/search", query_string={"q": "how do I ship a phone with a lithium battery"})
res = r.get_json()["results"]
print(json.dumps({"status": r.status_code, "first": [res[0]["group"], res[0]["confidence"]] if res else None,
                  "sklearn": sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy")),
                  "first_request_imported": sorted({m.split(".")[0] for m in set(sys.modules) - ready}),
                  "langid_ready": langid_ready}))
"""


@pytest.mark.slow
def test_a_serving_worker_never_imports_scikit_learn(built_index, tmp_path):
    """The service as a worker runs it (create_app with the real bundle, its own query encoder), in a fresh
    interpreter: after a search neither scikit-learn nor scipy is loaded. The same bundle without its stored
    probe (as built before) takes the in-process fallback, which does load it, and answers the same."""
    import os
    import shutil
    import subprocess
    import sys

    from kb.index import current_name

    name = current_name(built_index)
    old = tmp_path / "old-index"
    (old / "bundles").mkdir(parents=True)
    shutil.copytree(built_index / "bundles" / name, old / "bundles" / name)
    (old / "CURRENT").write_text(name + "\n")
    manifest = json.loads((old / "bundles" / name / "manifest.json").read_text())
    del manifest["domain_probe"]  # the manifest is not among the files it checksums
    (old / "bundles" / name / "manifest.json").write_text(json.dumps(manifest))
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    runs = {}
    for label, index in (("stored", built_index), ("old", old)):
        done = subprocess.run([sys.executable, "-c", _WORKER, str(index)], capture_output=True, text=True,
                              env=env, cwd=root, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs["stored"]["status"] == 200 and runs["stored"]["first"] is not None
    assert runs["stored"]["sklearn"] == [], runs["stored"]["sklearn"][:5]
    # the worker loaded before its first request what that request would otherwise wait for (~0.5 s each):
    # py3langid's model (KBService.load's warm-up search) and openapi-core (create_app)
    assert runs["stored"]["langid_ready"] == 1
    assert not {"openapi_core", "py3langid", "jsonschema"} & set(runs["stored"]["first_request_imported"]), runs
    assert "sklearn" in runs["old"]["sklearn"]  # the check can fail: the fallback does import it
    assert runs["old"]["first"][0] == runs["stored"]["first"][0]
    assert runs["old"]["first"][1] == pytest.approx(runs["stored"]["first"][1], abs=2e-4)


def test_cross_lingual_snippets_come_from_the_build_not_a_search_time_encode(built_index, searcher, query_encoder):
    """`kb build` stores every passage's snippet sentences and their vectors; a cross-lingual search picks
    each card's sentence from them and encodes nothing but the query."""
    from kb.passages import snippet_sentences

    bundle = searcher.bundle
    p = next(p for p in bundle.passages if len(p["sentences"]) >= 3)
    assert p["sentences"] == snippet_sentences(p["text"])
    start = searcher.sentence_start[bundle.passages.index(p)]
    stored = bundle.sentence_vectors[start : start + len(p["sentences"])].astype(np.float32)
    fresh = query_encoder.encode_passages(p["sentences"])  # the server's runtime; the suite builds with st
    assert np.min(np.sum(stored * fresh, axis=1)) > 0.995

    class QueriesOnly:
        """The query encoder, refusing passage encoding: a search must not need it."""

        def __init__(self, inner):
            self.inner, self.queries = inner, 0

        def encode_query(self, text):
            self.queries += 1
            return self.inner.encode_query(text)

        def encode_passages(self, texts):
            raise AssertionError(f"search encoded {len(texts)} passage texts")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    enc = QueriesOnly(query_encoder)
    s = Searcher(Bundle.open(built_index, model_checksum=query_encoder.checksum), enc)
    query = "¿Cómo envío un paquete con una batería de litio?"  # Spanish: no article in it, every hit cross-lingual
    res = s.search(query, Filters(), limit=5)
    assert enc.queries == 1 and len(res["results"]) == 5
    qv = query_encoder.encode_queries([query])[0]
    for r in res["results"]:
        pi = next(i for i, q in enumerate(s.passages) if q["id"] == r["passage"]["id"])
        sentences = s.passages[pi]["sentences"]
        assert r["snippet"] in sentences or r["snippet"].endswith(" …"), r["snippet"]
        if r["snippet"] in sentences:  # the closest sentence by freshly encoded vectors, up to float16 ties
            vecs = query_encoder.encode_passages(sentences) @ qv
            assert vecs[sentences.index(r["snippet"])] >= vecs.max() - 0.01

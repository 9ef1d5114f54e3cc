"""Property-based fuzzing (hypothesis) of what reads untrusted text: the article loader, the passage
splitter, the lexical normaliser/tokeniser and the entity extractor.

Properties: no exception (the loader reports problems, it never raises); every `kb check` message is one
`path:line: message` line with a line inside the file; tokens and FTS terms are well formed; highlight spans
lie inside the text; extracted numbers are finite (they go out as JSON). Bounded example counts,
derandomized, no example database: the same examples on every run, so CI does not flake.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kb.articles import OPTIONAL, REQUIRED, Article, check_tree, parse_file
from kb.assist import extract_entities, question_groups
from kb.lexical import LexicalIndex, matching_spans, normalize, query_terms, stem, tokenize
from kb.passages import MAX_WORDS, split_article

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("KB_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=N, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LINE_RE = re.compile(r"^(?P<path>[^\n]+?):(?P<line>\d+): (?P<message>\S[^\n]*)$")

# text from the scripts the product serves, plus the awkward parts of Unicode
ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
SCRIPTS = st.sampled_from([
    "parcel", "customs", "ഇന്ത്യ", "പാഴ്സൽ", "ൻ", "ന്‍", "বাংলাদেশ", "পার্সেল", "பார்சல்", "இந்தியா", "ሰላም", "ዕቃዬ",
    "पार्सल", "भारत", "EE123456789IN", "1Z999AA10123456784", "123456789012", "HS 8471.30", "2.5 kg", "₹2,500",
    "USD 40", "\u200d", "\u200c", "\ufeff", "\u2028", "\x85", "\t", "\r", "\r\n", "\n", "\x00", "\x07", "  ", "#", "##",
    "```", "~~~", "|", "*", "[x](/articles/hs-codes)", "<script>", "&amp;", "\u0301", "ǰ", "ß", "İ", "ﬁ",
    "9" * 400, "1" * 320 + " kg",
])
TEXT = st.lists(st.one_of(SCRIPTS, st.text(ALPHABET, max_size=12)), max_size=30).map("".join)


def _fm_value() -> st.SearchStrategy[str]:
    scalar = st.one_of(
        st.sampled_from(["en", "ta", "xx", "customs", "public", "internal", '["*"]', "[IN, BD]", "[customs]", "[]",
                         "{}", "~", "null", "yes", "0x1F", "1e400", "-", "|", ">", "'", '"', "[", "{", "&a x",
                         "*a", "!!python/object:os.system", "!!binary ###", "!!int x", "!!float y", "!!timestamp z",
                         "!!set {a}", "!!omap [a]", "<<: {a: 1}", "? [a]", "@x", "`x`", "%TAG", "\t", "!x"]),
        st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(0, 9999), st.integers(0, 13),
                  st.integers(0, 32)),
        st.text(ALPHABET, max_size=20),
    )
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
                        max_leaves=6)


KEYS = st.one_of(st.sampled_from(REQUIRED + OPTIONAL), st.text(ALPHABET, min_size=1, max_size=8))
FM_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", KEYS, _fm_value()),
    st.builds(lambda k, v: f"  {k}: {v}", KEYS, _fm_value()),  # indented: questions entries, or an error
    st.builds(lambda v: f"  - {v}", _fm_value()),
    st.text(ALPHABET, max_size=20),
)
FRONT = st.lists(FM_LINE, max_size=14).map("\n".join)
ARTICLE_TEXT = st.one_of(
    st.builds(lambda fm, body, close: f"---\n{fm}\n{close}\n{body}", FRONT, TEXT,
              st.sampled_from(["---", "---  ", "----", "", "--- x", "..."])),
    st.builds(lambda fm, body: f"\ufeff---\r\n{fm}\r\n---\r\n{body}", FRONT, TEXT),
    TEXT,
)
VALID = (
    "---\nid: fuzz-article\ntitle: \"A title\"\nlang: en\ntopics: [customs]\ncountries: [\"*\"]\n"
    "audience: public\nupdated: 2026-11-01\nquestions:\n  ta: [\"பார்சல் எங்கே\"]\n---\n## Heading\n\nBody text.\n"
)


def _check_problems(problems, raw: bytes) -> None:
    n_lines = raw.count(b"\n") + 1
    for p in problems:
        text = str(p)
        m = LINE_RE.match(text)
        assert m, text
        assert 1 <= int(m["line"]) <= n_lines + 1, (text, n_lines)
        assert "Traceback" not in text


def _parse(raw: bytes, name: str = "fuzz-article.en.md"):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "customs" / name
        path.parent.mkdir()
        path.write_bytes(raw)
        art, problems = parse_file(path, f"articles/customs/{name}")
    _check_problems(problems, raw)
    if art is not None:
        assert not problems
        assert art.id and art.title and art.lang and art.topics and art.countries
        assert isinstance(art.updated, dt.date)
    return art, problems


# ---------------------------------------------------------------------------- loader


@FUZZ
@given(ARTICLE_TEXT)
def test_loader_never_raises_and_messages_are_lines(text):
    _parse(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=400))
def test_loader_on_raw_bytes(raw):
    _parse(raw)
    _parse(b"---\n" + raw)


@FUZZ
@given(st.integers(0, len(VALID) - 1), st.integers(0, 6), TEXT)
def test_loader_on_mutated_valid_article(pos, cut, insert):
    """A valid article with a slice replaced by junk: valid or reported, never an exception."""
    art, problems = _parse((VALID[:pos] + insert + VALID[pos + cut:]).encode("utf-8", "surrogatepass"))
    assert art is not None or problems


def test_valid_seed_parses():
    art, problems = _parse(VALID.encode())
    assert problems == [] and art.id == "fuzz-article" and art.questions == {"ta": ["பார்சல் எங்கே"]}


@settings(max_examples=max(N // 10, 5), derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(ARTICLE_TEXT, min_size=1, max_size=6), st.lists(st.sampled_from(["customs", "claims", "x"]),
                                                                 min_size=6, max_size=6))
def test_check_tree_never_raises(texts, folders):
    """Cross-file rules (duplicates, translations, links) on fuzzed trees."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "articles"
        for i, text in enumerate(texts):
            folder = root / folders[i]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"fuzz-{i % 3}.en.md").write_bytes(text.encode("utf-8", "surrogatepass"))
        articles, problems = check_tree(root)
        for p in problems:
            assert LINE_RE.match(str(p)), str(p)
        assert len(articles) + len({p.path for p in problems}) >= 1


def test_kb_check_cli_on_a_fuzzed_tree(tmp_path):
    """The CLI prints only `path:line: message` lines for a tree of fuzzed files, exit 1, no traceback."""
    root = tmp_path / "articles"
    (root / "customs").mkdir(parents=True)
    examples = []

    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(ARTICLE_TEXT)
    def collect(text):
        examples.append(text)

    collect()
    for i, text in enumerate(examples):
        (root / "customs" / f"fuzz-{i:03d}.en.md").write_bytes(text.encode("utf-8", "surrogatepass"))
    (root / "customs" / os.fsdecode(b"bad-name-\xff.en.md")).write_bytes(b"x")  # a file name that is not UTF-8
    r = subprocess.run([sys.executable, "-m", "kb.cli", "check", "--articles", str(root)], capture_output=True,
                       cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    out, err = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")
    assert r.returncode == 1 and "Traceback" not in out + err, err[-2000:]
    lines = out.splitlines()
    assert len(lines) >= len(examples) // 2
    for line in lines:
        assert LINE_RE.match(line), line


# ---------------------------------------------------------------------------- passages

MD_LINE = st.one_of(
    st.builds(lambda h, t: f"{h} {t}", st.sampled_from(["#", "##", "###", "####", "#######"]), TEXT),
    st.sampled_from(["```", "~~~", "", "| a | b |", "|---|---|", "- item", "1. one", "> quote", "<div>", "</div>",
                     "***", "    code", "[link](/articles/x)", "![img](javascript:alert(1))"]),
    st.builds(lambda n, w: " ".join([w] * n), st.integers(0, 700), st.sampled_from(["word", "பார்சல்", "ሰላም."])),
    TEXT,
)
BODY = st.lists(MD_LINE, max_size=25).map("\n".join)


@FUZZ
@given(BODY, st.text(ALPHABET, min_size=1, max_size=30))
def test_passage_splitter(body, title):
    art = Article(id="fuzz-article", lang="en", title=title, topics=["customs"], countries=["*"],
                  audience="public", updated=dt.date(2026, 1, 1), body=body, path="x")
    passages = split_article(art)
    assert len({p.id for p in passages}) == len(passages)
    for p in passages:
        assert p.text.strip(), p
        assert p.article_id == "fuzz-article" and p.group == "fuzz-article"
        # a section is cut at MAX_WORDS; folding a short tail and its heading in may add up to a fifth
        assert len(p.text.split()) <= MAX_WORDS * 1.2 + 2 * len(" ".join(p.heading_path).split()) + 10, \
            len(p.text.split())
        assert p.embed_text.startswith(title)


# ---------------------------------------------------------------------------- lexical

TERM_RE = re.compile(r'^"[^"\s]+"\*?$')


@FUZZ
@given(TEXT)
def test_normalize_and_tokenize(text):
    norm = normalize(text)
    assert normalize(norm) == norm  # idempotent: passages and queries meet in the same form
    tokens = tokenize(text)
    assert tokens == tokenize(norm)
    for tok in tokens:
        assert tok and not any(ch.isspace() for ch in tok) and '"' not in tok
        assert stem(tok) and tok.startswith(stem(tok))


@FUZZ
@given(TEXT)
def test_query_terms_are_safe_fts5(text):
    terms = query_terms(text)
    assert len(terms) <= 64 and len(set(terms)) == len(terms)
    for t in terms:
        assert TERM_RE.match(t), t


@FUZZ
@given(TEXT, TEXT)
def test_matching_spans(text, query):
    spans = matching_spans(text, query)
    last = 0
    for start, end in spans:
        assert last <= start < end <= len(text), (spans, len(text))
        last = end
    if not query_terms(query):
        assert spans == []


def test_lexical_index_search_never_raises(tmp_path):
    path = tmp_path / "lex.sqlite"
    LexicalIndex.build(path, ["Customs duty on a parcel to India", "பார்சல் சுங்கத்தில்", "ዕቃዬ ጉምሩክ ላይ"],
                       ["where is my parcel"])
    index = LexicalIndex(path)
    seen = []

    @FUZZ
    @given(TEXT)
    def search(text):
        for table in ("fts", "questions"):
            rows = index.search(text, limit=5, table=table)
            assert all(isinstance(r, int) and math.isfinite(s) for r, s in rows)
            seen.extend(rows)

    search()
    assert index.search("customs parcel", limit=5) and seen


# ---------------------------------------------------------------------------- entities


@FUZZ
@given(TEXT)
def test_entity_extractor(text):
    ents = extract_entities(text)
    assert set(ents) == {"tracking_numbers", "hs_codes", "countries", "weights", "amounts", "documents"}
    json.dumps(ents, allow_nan=False)  # finite numbers only: the assist response is JSON
    for t in ents["tracking_numbers"]:
        assert t["value"] in text
    for w in ents["weights"]:
        assert math.isfinite(w["value"])
    for a in ents["amounts"]:
        assert math.isfinite(a["value"]) and a["currency"]
    groups = question_groups(text)
    assert len(groups) <= 4 and all(isinstance(g, str) and g for g in groups)

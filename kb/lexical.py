"""Lexical leg: SQLite FTS5 (BM25) over script-aware normalised tokens.

FTS5's unicode61 tokenizer is told to keep combining marks (vowel signs, viramas) inside tokens (see
FTS5_TOKENIZER), but Indic text arrives in several equivalent encodings. So text is normalised here first,
identically for passages and queries: Unicode NFC, old-style Malayalam chillu sequences (consonant + virama
+ ZWJ) and atomic chillu letters both mapped to consonant + virama, remaining ZWJ/ZWNJ removed, Amharic
homophone letter series folded (and ዉ -> ው, u-form + ዋ -> the labialised letter), case folded. Query terms become prefix terms with trailing vowel
signs/viramas dropped, so a stem finds its common inflected forms (पार्सल → पार्सलों, பார்சல் → பார்சலை).
"""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import regex

from .stopwords import all_function_words

TOKEN_RE = regex.compile(r"[\p{L}\p{M}\p{N}]+")
ZW = dict.fromkeys(map(ord, "\u200c\u200d\u200b\u2060\ufeff"), None)
VIRAMA = "\u0d4d"
# Malayalam atomic chillu letters and their consonant.
CHILLU = {"\u0d7a": "\u0d23", "\u0d7b": "\u0d28", "\u0d7c": "\u0d30", "\u0d7d": "\u0d32", "\u0d7e": "\u0d33",
          "\u0d7f": "\u0d15", "\u0d54": "\u0d2e", "\u0d55": "\u0d2f", "\u0d56": "\u0d34"}
OLD_CHILLU = regex.compile("([\u0d15-\u0d39])\u0d4d\u200d")
# Amharic writes one sound with several letter series (ሀ ሐ ኀ, ሰ ሠ, አ ዐ, ጸ ፀ) and spelling varies between
# writers; the usual IR folding maps each series to one, keeping the vowel order, plus ሃ -> ሀ and ኣ -> አ.
ETHIOPIC_FOLD = {
    **{0x1210 + i: 0x1200 + i for i in range(8)}, **{0x1280 + i: 0x1200 + i for i in range(8)},
    **{0x1220 + i: 0x1230 + i for i in range(8)}, **{0x12D0 + i: 0x12A0 + i for i in range(7)},
    **{0x1340 + i: 0x1338 + i for i in range(8)},
}
ETHIOPIC_FOLD.update({0x1203: 0x1200, 0x1213: 0x1200, 0x1283: 0x1200, 0x12A3: 0x12A0, 0x12D3: 0x12A0})
# ዉ ("wu") is widely written for ው ("w"): ነዉ / ነው, ዉስጥ / ውስጥ (118 times in this knowledge base's text)
ETHIOPIC_FOLD[0x12C9] = 0x12CD
# A labialised syllable is also spelt as its consonant's u-form + ዋ (ሉዋ for ሏ, ኩዋ for ኳ): one letter.
# the velars (and ሀ, whose hwa is ኋ) have a letter of their own, the other rows their eighth letter
_WA = {0x1200: 0x128B, 0x1240: 0x124B, 0x12A8: 0x12B3, 0x1308: 0x1313, 0x12B8: 0x12C3}
LABIALISED = regex.compile("([\u1201-\u1351])\u12CB")


def _labialised(m: regex.Match) -> str:
    cp = ord(m.group(1))
    base = cp - 1
    if (cp - 0x1200) % 8 != 1 or base in (0x12A0, 0x12C8, 0x12E8):  # u-form of a row with a wa-form
        return m.group(0)
    return chr(_WA.get(base, base + 7))
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i if in is it its me my of on or our the this to was what "
    "when where which who why will with you your".split()
)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = OLD_CHILLU.sub(lambda m: m.group(1) + VIRAMA, text)
    for ch, base in CHILLU.items():
        if ch in text:
            text = text.replace(ch, base + VIRAMA)
    text = text.translate(ZW).translate(ETHIOPIC_FOLD)
    if "\u12cb" in text:
        text = LABIALISED.sub(_labialised, text)
    return text.casefold()


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(normalize(text))


def stem(token: str) -> str:
    """Drop trailing combining marks (vowel signs, virama): the part an inflected form shares."""
    end = len(token)
    while end > 1 and unicodedata.category(token[end - 1]).startswith("M"):
        end -= 1
    return token[:end]


def query_words(text: str, skip: frozenset[str] = frozenset()) -> list[list[str]]:
    """The FTS5 forms of each query word worth matching (stop-words, one-letter words and numbers left out,
    and the tokens in ``skip``)."""
    words: list[list[str]] = []
    for tok in tokenize(text):
        if tok in STOPWORDS or len(tok) < 2 or tok.isdigit() or tok in skip:
            # numbers (weights, amounts, years) match across languages without meaning the same thing
            continue
        base = stem(tok)
        if base.isascii() and len(base) == 3 and base.isalpha():
            # a three-letter Latin word as a prefix matches too much ("cat" catalogue, "pet" petrol): the
            # word and its plural only
            forms = [f'"{tok}"', f'"{tok}s"', f'"{tok}es"']
        else:
            # Ethiopic and Indic letters carry a syllable each: two of them already make a useful prefix
            forms = [f'"{base}"*' if len(base) >= 3 or (len(base) == 2 and not base.isascii()) else f'"{tok}"']
        if forms not in words:
            words.append(forms)
    return words


def query_terms(text: str) -> list[str]:
    terms: list[str] = []
    for forms in query_words(text):
        terms.extend(t for t in forms if t not in terms)
    return terms[:64]


# The text is stored as tokenize()'s tokens joined by spaces; unicode61 must keep each one whole. Its default
# token characters ("L* N* Co") leave out the combining marks (M*), so without M* a Bengali, Hindi, Malayalam
# or Tamil word fell apart at every vowel sign and virama (হারানো -> হ র ন).
FTS5_TOKENIZER = "'unicode61 remove_diacritics 0 categories ''L* N* Co M*'''"


class LexicalIndex:
    """FTS5 tables: `fts` holds passage texts (rowid = passage position in the bundle), `questions` the
    editor-written questions (rowid = question position)."""

    def __init__(self, path: Path):
        # Copied into memory: queries never touch the file, so pruning an old bundle cannot break a reader.
        import threading

        self.path = Path(path)
        src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src.backup(self._db)
        finally:
            src.close()
        self._lock = threading.Lock()

    TABLES = ("fts", "questions")

    @staticmethod
    def build(path: Path, texts: list[str], questions: list[str] | None = None) -> None:
        conn = sqlite3.connect(path)
        try:
            for table, rows in zip(LexicalIndex.TABLES, (texts, questions or []), strict=True):
                conn.execute(f"CREATE VIRTUAL TABLE {table} USING fts5(body, tokenize={FTS5_TOKENIZER}, "
                             "prefix='2 3')")
                conn.executemany(f"INSERT INTO {table}(rowid, body) VALUES (?, ?)",
                                 ((i, " ".join(tokenize(t))) for i, t in enumerate(rows)))
            conn.commit()
        finally:
            conn.close()

    def search(self, text: str, limit: int = 100, rowids: set[int] | None = None,
               table: str = "fts") -> list[tuple[int, float]]:
        """(rowid, score) best first; score is -bm25 (higher is better). ``rowids`` restricts the pool."""
        terms = query_terms(text)
        if not terms or table not in self.TABLES:
            return []
        sql = f"SELECT rowid, -bm25({table}) FROM {table} WHERE {table} MATCH ? ORDER BY bm25({table}) LIMIT ?"
        try:
            with self._lock:
                rows = self._db.execute(sql, (" OR ".join(terms), pool_size(limit, rowids))).fetchall()
        except sqlite3.OperationalError:
            return []
        return restrict(rows, limit, rowids)


def pool_size(limit: int, rowids: set[int] | None) -> int:
    """Rows a search restricted to ``rowids`` fetches before filtering (best matches first, then filtered):
    one rule for every backend (kb.pgindex too), so they rank alike."""
    return limit if rowids is None else max(limit * 5, 500)


def restrict(rows: list[tuple[int, float]], limit: int, rowids: set[int] | None) -> list[tuple[int, float]]:
    """The best ``limit`` of ``rows`` (best first) among ``rowids`` (None: all), as (rowid, score)."""
    if rowids is not None:
        rows = [r for r in rows if r[0] in rowids]
    return [(int(r), float(s)) for r, s in rows[:limit]]


# Highlighting (kb.search snippets) marks the words the lexical leg matched, minus function words: a
# snippet full of marked "है" / "என்ன" hides the one word the reader is looking for.
HIGHLIGHT_SKIP = STOPWORDS | all_function_words(normalize)
ETHIOPIC_WORD = regex.compile(r"^\p{Ethiopic}+$")
# Amharic writes prepositions as prefixes (የጉምሩክ "of customs") and inflects with suffixes (እቃዬ "my item",
# እቃዎች "items") that change the vowel of the stem's last letter (መላክ "to send", መላኪያ "sending").
AM_PROCLITICS = tuple(normalize(p) for p in ("እንደ", "ስለ", "ወደ", "እስከ", "የ", "በ", "ለ", "ከ"))
AM_SUFFIXES = tuple(normalize(s) for s in ("ዎችን", "ዎች", "ቸውን", "ቸው", "ችን", "ችሁ", "ዎን", "ውን", "ዋን", "ዬን",
                                         "ዬ", "ዎ", "ው", "ዋ", "ን", "ም", "ች"))


def _ethiopic_consonant(ch: str) -> int:
    """Ethiopic syllables come in rows of eight vowel orders of one consonant: the row number."""
    cp = ord(ch)
    return (cp - 0x1200) >> 3 if 0x1200 <= cp <= 0x137F else -cp


def _am_core(word: str, suffixes: bool) -> str:
    """``word`` without one leading preposition (and one trailing suffix), keeping at least two letters."""
    for p in AM_PROCLITICS:
        if word.startswith(p) and len(word) - len(p) >= 2:
            word = word[len(p):]
            break
    if suffixes:
        for s in AM_SUFFIXES:
            if word.endswith(s) and len(word) - len(s) >= 2:
                return word[: -len(s)]
    return word


def _am_matches(word: str, stem: str) -> bool:
    for w in {word, _am_core(word, suffixes=False)}:
        if len(stem) < 3:
            if w.startswith(stem):
                return True
        elif (len(w) >= len(stem) and w.startswith(stem[:-1])
              and _ethiopic_consonant(w[len(stem) - 1]) == _ethiopic_consonant(stem[-1])):
            return True
    return False


def highlight_terms(query: str) -> list[tuple[str, bool]]:
    """(term, is_prefix) for each query word worth marking: what :func:`query_terms` sends to FTS (a short
    Latin word such as "US" is an exact term, so it must not mark "usually"), minus function words."""
    out: list[tuple[str, bool]] = []
    for tok in tokenize(query):
        if tok in HIGHLIGHT_SKIP:
            continue
        for term in query_terms(tok):
            pair = (term.strip('"*'), term.endswith("*"))
            if ETHIOPIC_WORD.match(pair[0]):
                pair = (_am_core(pair[0], suffixes=True), True)
            if pair not in out:
                out.append(pair)
    return out


def matching_spans(text: str, query: str) -> list[tuple[int, int]]:
    """Character spans in ``text`` of words that a query term matches (for highlighting)."""
    terms = highlight_terms(query)
    if not terms:
        return []
    # an acronym typed in capitals ("US", "EU", "HS") marks the capitalised word only, not "us"
    acronyms = {t.casefold() for t in TOKEN_RE.findall(query) if t.isascii() and t.isupper() and len(t) <= 4}
    spans = []
    for m in TOKEN_RE.finditer(text):
        raw = m.group(0)
        word = normalize(raw)
        if word in HIGHLIGHT_SKIP:
            continue
        for term, prefix in terms:
            if ETHIOPIC_WORD.match(term):
                hit = ETHIOPIC_WORD.match(word) is not None and _am_matches(word, term)
            elif prefix:
                hit = word.startswith(term)
            else:
                hit = word == term and not (term in acronyms and not raw.isupper())
            if hit:
                spans.append((m.start(), m.end()))
                break
    return spans

"""Romanized Amharic to Ethiopic script, for search.

Customers type Amharic in Latin letters ("kasa lemeteyek sint ken alegn"), following no standard; the
articles and their Amharic questions are in Ethiopic, and the model reads Ethiopic Amharic much better than
Latin-letter Amharic. This is the usual informal (SERA-like) reading: a consonant (or digraph: sh, ch, gn/ny,
zh, ts, kh) takes the vowel after it as one of the seven orders (e ä, u, i, a, ie é, none ə, o), "ua"/"wa"
after a consonant is its labialised form (ሯ, ቋ), a word-initial vowel is the vowel letter (e -> እ). Doubled
letters (gemination, not written in Ethiopic) are one. The result is approximate (t/ጠ, k/ቀ, s/ጸ are not told
apart in Latin letters; the plain letter is taken), which is why search uses it next to the original text,
not instead of it. No library on PyPI kept here does this, so it is a small table.
"""

from __future__ import annotations

import regex

# consonant (or digraph) -> codepoint of its first-order letter; longest keys are tried first
ROWS = {
    "h": 0x1200, "l": 0x1208, "m": 0x1218, "r": 0x1228, "s": 0x1230, "sh": 0x1238, "q": 0x1240, "b": 0x1260,
    "v": 0x1268, "t": 0x1270, "ch": 0x1278, "n": 0x1290, "gn": 0x1298, "ny": 0x1298, "k": 0x12A8, "kh": 0x12B8,
    "w": 0x12C8, "z": 0x12D8, "zh": 0x12E0, "y": 0x12E8, "d": 0x12F0, "j": 0x1300, "g": 0x1308, "ts": 0x1338,
    "tz": 0x1338, "f": 0x1348, "p": 0x1350, "c": 0x12A8, "x": 0x12A8,
}
VOWEL_ORDER = {"e": 0, "u": 1, "i": 2, "a": 3, "ie": 4, "ee": 4, "o": 6}  # 5: no vowel (sixth order)
VOWEL_LETTER = {"a": 0x12A0, "e": 0x12A5, "i": 0x12A2, "ie": 0x12A4, "ee": 0x12A4, "o": 0x12A6, "u": 0x12A1}
# labialised "wa" form: the eighth letter of the row, or a separate letter for the velars
WA = {0x1240: 0x124B, 0x12A8: 0x12B3, 0x1308: 0x1313, 0x12B8: 0x12C3, 0x12C8: 0x12CB, 0x12E8: 0x12EB}
CONSONANTS = sorted(ROWS, key=len, reverse=True)
VOWELS = sorted(VOWEL_ORDER, key=len, reverse=True)
PREFIXES = frozenset({"be", "le", "ke", "ye"})  # prepositions written attached to the next word
WORD = regex.compile(r"[A-Za-z']+|[^A-Za-z']+")


def _vowel_at(word: str, i: int) -> str | None:
    return next((v for v in VOWELS if word.startswith(v, i)), None)


def _closed(w: str, i: int) -> bool:
    """Whether position ``i`` starts a consonant followed by another consonant or the end of the word."""
    c = next((k for k in CONSONANTS if w.startswith(k, i)), None)
    return c is not None and (i + len(c) == len(w) or _vowel_at(w, i + len(c)) is None)


def word_to_ethiopic(word: str) -> str:
    """One Latin-letter Amharic word in Ethiopic letters ("alegn" -> አለኝ, "teseberual" -> ተሰበሯል)."""
    w = regex.sub(r"([bcdfghjklmnpqrstvwxyz])\1", r"\1", word.lower().replace("'", ""))
    out, i = [], 0
    while i < len(w):
        c = next((k for k in CONSONANTS if w.startswith(k, i)), None)
        if c is None:
            v = _vowel_at(w, i)
            if v is None:  # not a letter this table knows
                i += 1
                continue
            out.append(chr(VOWEL_LETTER[v]))
            i += len(v)
            continue
        base = ROWS[c]
        if c == "c" and w[i + 1 : i + 2] in ("e", "i"):
            base = ROWS["s"]
        i += len(c)
        if (w.startswith("ua", i) or w.startswith("wa", i)) and c != "w":
            out.append(chr(WA.get(base, base + 7)))
            i += 2
            continue
        v = _vowel_at(w, i)
        order = VOWEL_ORDER[v] if v else 5
        if v == "i" and (c == "y" or _closed(w, i + 1)):
            order = 5  # "yi", and "i" in a closed syllable ("sint", "min"), is the sixth order (ይ, ስንት, ምን)
        out.append(chr(base + order))
        i += len(v) if v else 0
    return "".join(out)


def _kept(tok: str, keep: frozenset[str] | set[str]) -> bool:
    return tok.lower() in keep or (tok.isupper() and len(tok) >= 2)


def to_ethiopic(text: str, keep: frozenset[str] | set[str] = frozenset(), min_share: float = 0.5) -> str:
    """``text`` with its Latin-letter words in Ethiopic; words in ``keep`` (lower case: English loanwords
    such as "parcel", names) and capitals-only codes (TIN, FDA) stay as typed. ``text`` unchanged when
    fewer than ``min_share`` of its words would change: then it is English with an Amharic word or two (or
    was mistaken for romanized Amharic), which the model reads better as typed."""
    words = [t for t in WORD.findall(text) if regex.match(r"[A-Za-z']", t)]
    if not words or sum(not _kept(t, keep) for t in words) < min_share * len(words):
        return text
    parts: list[str] = []
    pending = ""
    for tok in WORD.findall(text):
        if not regex.match(r"[A-Za-z']", tok):
            if pending and tok.strip():
                parts.append(pending)
                pending = ""
            parts.append(tok if not pending else "")
            continue
        if _kept(tok, keep):
            if pending:  # a preposition before a word kept in Latin letters stays a word of its own
                parts.append(pending + " ")
                pending = ""
            parts.append(tok)
            continue
        if tok.lower() in PREFIXES:
            pending = word_to_ethiopic(tok)
            continue
        parts.append(pending + word_to_ethiopic(tok))
        pending = ""
    if pending:
        parts.append(pending)
    return "".join(parts)

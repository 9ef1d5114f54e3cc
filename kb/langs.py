"""Query language detection.

Script decides for Malayalam, Tamil, Bengali, Ethiopic and the other single-language scripts; py3langid
(a kept detector) decides among languages sharing Latin or Devanagari. Romanized Indic/Amharic
(Manglish, Tanglish, Banglish, Hinglish, romanized Amharic) is recognised from common function words:
such queries are answered in the language they stand for, but the lexical leg is skipped for them,
because no passage is written in romanized script.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

SCRIPTS = [  # (first, last, language)
    (0x0D00, 0x0D7F, "ml"), (0x0B80, 0x0BFF, "ta"), (0x0980, 0x09FF, "bn"), (0x1200, 0x139F, "am"),
    (0x2D80, 0x2DDF, "am"), (0x0C00, 0x0C7F, "te"), (0x0C80, 0x0CFF, "kn"), (0x0A80, 0x0AFF, "gu"),
    (0x0A00, 0x0A7F, "pa"), (0x0B00, 0x0B7F, "or"), (0x0D80, 0x0DFF, "si"), (0x0E00, 0x0E7F, "th"),
    (0x0590, 0x05FF, "he"), (0x0370, 0x03FF, "el"), (0x10A0, 0x10FF, "ka"), (0x0530, 0x058F, "hy"),
    (0x3040, 0x30FF, "ja"), (0xAC00, 0xD7AF, "ko"), (0x1100, 0x11FF, "ko"),
]
DEVANAGARI = (0x0900, 0x097F)
ROMANIZED = {
    "hi": "mera meri mere kya kab kaise kahan hai hain nahi nahin kyun kyu karna karein karo chahiye aaya gaya "
          "raha rahi abhi bhej bhejna bheja paisa kitna kitne wala wali mujhe hum aap apna ko se ka ki ke tak "
          "liye saath kaun batao bataye mil milega pahunch pahuncha hoga",
    "bn": "amar ami apnar apni kobe kothay keno ache achhe nai hobe korbo korte koto taka pathabo pathano "
          "kivabe kibhabe dorkar eta oita ekhono pabo pelam hoyni hocche jabe lagbe ar theke er",
    "ml": "ente enthu enthanu evide eppol eppo ethra undo vannilla kittiyilla cheyyan cheyyum aanu alle "
          "ningal njan parayamo enikku ayakkan ethu entha engane venam illallo kittum kittan nokkanam kudungi "
          "ayachu ayakkanam kittiyittilla evideyanu ethrayanu",
    "ta": "enna ennoda enga eppadi evvalavu varala vandhuduchu panna pannanum sollunga irukku irukka naan "
          "unga vendum venum anuppa kidaikkala epo ennudaya engal ungal eppo vanthu varuma",
    "am": "endet yene ebakih ebakish ebakachihu lemin sint meche selam alew yelem yelelem esti ena gin betam "
          "ameseginalehu eqa eqaye gumruk yihe lik",
}
ROMANIZED_WORDS = {lang: frozenset(words.split()) for lang, words in ROMANIZED.items()}
WORD_RE = regex.compile(r"[\p{L}\p{M}']+")
LATIN_LANGS = ["en", "es", "fr", "de", "pt", "it", "nl", "id", "ms", "tr", "sw", "so", "ro", "vi", "pl", "sv"]
DEVANAGARI_LANGS = ["hi", "mr", "ne"]


@dataclass(frozen=True)
class LangGuess:
    lang: str  # ISO 639-1 code, "und" when nothing can be said
    script: str  # a script name, e.g. "Latin", "Malayalam"
    romanized: bool = False
    # False when the text was called English only because the detector was unsure and leaned to another
    # language (a short German question full of English names): results stay English, but word-for-word
    # matching against English text is not trusted
    certain: bool = True


@lru_cache(maxsize=1)
def _identifier() -> dict[tuple[str, ...], object]:
    """py3langid restricted to each language list detect() uses, built once from one load of its model.

    Restricting per call (``set_languages``) copied the 100,053-feature column block on every query under a
    lock; these share the model's tokenizer tables and keep only their own columns, so the full 142-language
    table (27 MB) is freed once they exist.
    """
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    full = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    out = {}
    for langs in (LATIN_LANGS, DEVANAGARI_LANGS):
        full.set_languages(langs)
        out[tuple(langs)] = LanguageIdentifier(full.nb_ptc, full.nb_pc, full.nb_classes, full.tk_nextmove,
                                               full.tk_output, norm_probs=True, tk_row=full.tk_row)
    return out


def _classify(text: str, langs: list[str]) -> tuple[str, float]:
    """py3langid's best guess among ``langs`` (LATIN_LANGS or DEVANAGARI_LANGS) and its probability."""
    lang, prob = _identifier()[tuple(langs)].classify(text)
    return lang, float(prob)


def _script_counts(text: str) -> tuple[dict[str, int], int, int]:
    counts: dict[str, int] = {}
    latin = deva = 0
    for ch in text:
        cp = ord(ch)
        if cp < 0x80:
            if ch.isalpha():
                latin += 1
            continue
        if DEVANAGARI[0] <= cp <= DEVANAGARI[1]:
            deva += 1
            continue
        for lo, hi, lang in SCRIPTS:
            if lo <= cp <= hi:
                counts[lang] = counts.get(lang, 0) + 1
                break
        else:
            if ch.isalpha():
                name = unicodedata.name(ch, "")
                if name.startswith("LATIN"):
                    latin += 1
                elif name.startswith(("ARABIC", "CYRILLIC", "CJK")):
                    key = {"ARABIC": "ar", "CYRILLIC": "ru", "CJK": "zh"}[name.split()[0]]
                    counts[key] = counts.get(key, 0) + 1
    return counts, latin, deva


Vocabulary = dict[str, frozenset[str]]


def romanized_vocabulary(samples: list[tuple[str, str]], english: list[str]) -> Vocabulary:
    """Words that mark romanized text of each language, learnt from a knowledge base's own text.

    ``samples``: (language, text) pairs, e.g. the articles' questions; the Latin-script ones in a language
    other than English (the romanized forms editors wrote) contribute their words, minus every word of
    ``english`` and of the English samples, minus words shared by two languages.
    """
    eng = {w.lower() for t in [*english, *(t for lang, t in samples if lang == "en")] for w in WORD_RE.findall(t)}
    seen: dict[str, set[str]] = {}
    for lang, text in samples:
        if lang == "en" or any(ord(ch) > 0x24F and ch.isalpha() for ch in text):
            continue
        for w in WORD_RE.findall(text):
            w = w.lower()
            if len(w) >= 3 and w not in eng:
                seen.setdefault(w, set()).add(lang)
    out: dict[str, set[str]] = {}
    for w, langs in seen.items():
        if len(langs) == 1:
            out.setdefault(next(iter(langs)), set()).add(w)
    return {lang: frozenset(words) for lang, words in out.items()}


def romanized_language(text: str, extra: Vocabulary | None = None) -> str | None:
    words = [w.lower() for w in WORD_RE.findall(text)]
    if not words:
        return None
    best, best_hits, longest = None, 0, 0
    for lang in sorted(set(ROMANIZED_WORDS) | set(extra or {})):
        vocab = ROMANIZED_WORDS.get(lang, frozenset()) | (extra or {}).get(lang, frozenset())
        hits = [w for w in words if w in vocab]
        if len(hits) > best_hits:
            best, best_hits, longest = lang, len(hits), max(map(len, hits))
    if best and (best_hits >= 2 or (len(words) <= 6 and longest >= 4)):
        return best
    return None


def detect(text: str, romanized: Vocabulary | None = None) -> LangGuess:
    """``romanized``: extra romanized-word lists (see romanized_vocabulary) on top of the built-in ones."""
    counts, latin, deva = _script_counts(text)
    other = max(counts.items(), key=lambda kv: kv[1]) if counts else (None, 0)
    # Mixed script ("tracking ላይ 'Held: action required' ይላል", "HS code എന്താണ്") counts as the non-Latin
    # language however many Latin letters surround it: an Ethiopic or Indic letter is a whole syllable, and
    # whoever types one reads that language.
    if other[0] and other[1] >= 2 and other[1] >= deva:
        return LangGuess(other[0], _script_name(other[0]))
    if deva >= 2:
        return LangGuess(_classify(text, DEVANAGARI_LANGS)[0] if len(text) > 25 else "hi", "Devanagari")
    if latin:
        roman = romanized_language(text, romanized)
        if roman:
            return LangGuess(roman, "Latin", romanized=True)
        if len(text.split()) <= 3:
            return LangGuess("en", "Latin")
        # English is the product's Latin-script language: another one only when the detector is sure
        lang, prob = _classify(text, LATIN_LANGS)
        return LangGuess(lang, "Latin") if prob >= 0.95 else LangGuess("en", "Latin", certain=lang == "en")
    return LangGuess("und", "Unknown")


def _script_name(lang: str) -> str:
    return {"ml": "Malayalam", "ta": "Tamil", "bn": "Bengali", "am": "Ethiopic", "te": "Telugu", "kn": "Kannada",
            "gu": "Gujarati", "pa": "Gurmukhi", "or": "Oriya", "si": "Sinhala", "th": "Thai", "he": "Hebrew",
            "el": "Greek", "ka": "Georgian", "hy": "Armenian", "ja": "Japanese", "ko": "Hangul", "ar": "Arabic",
            "ru": "Cyrillic", "zh": "Han"}.get(lang, lang)

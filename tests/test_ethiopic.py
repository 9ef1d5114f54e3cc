"""Romanized Amharic to Ethiopic letters (kb.ethiopic) and the Ethiopic spelling folds of the lexical leg."""

from __future__ import annotations

import pytest

from kb.ethiopic import to_ethiopic, word_to_ethiopic
from kb.lexical import LexicalIndex, tokenize


@pytest.mark.parametrize("latin, ethiopic", [
    ("gumruk", "ጉምሩክ"),          # consonant + u, a final consonant in the sixth order
    ("alegn", "አለኝ"),            # initial vowel letter, the gn digraph
    ("teseberual", "ተሰበሯል"),     # u + a after a consonant: its labialised letter
    ("sint", "ስንት"),             # i in a closed syllable is the sixth order
    ("mikefel", "ሚከፈል"),         # ... and in an open one the third
    ("yichalal", "ይቻላል"),        # yi, the ch digraph
    ("betam", "በታም"),
    ("telebirr", "ተለብር"),        # doubled letters (gemination) are written once
    ("eqaye", "እቃየ"),
])
def test_words(latin, ethiopic):
    assert word_to_ethiopic(latin) == ethiopic


def test_sentences_keep_loanwords_and_codes_and_attach_prepositions():
    keep = frozenset({"parcel", "power", "bank", "courier"})
    assert to_ethiopic("parcel gumruk lay new? TIN yasfeligal", keep) == "parcel ጉምሩክ ላይ ነው? TIN ያስፈሊጋል"
    assert to_ethiopic("be gumruk", keep) == "በጉምሩክ"           # written as one word in Ethiopic
    assert to_ethiopic("power bank be courier mlak yichalal?", keep) == "power bank በ courier ምላክ ይቻላል?"


def test_english_with_an_amharic_looking_word_is_left_alone():
    keep = frozenset({"late", "express", "delivery", "refund", "for"})
    assert to_ethiopic("macro for late Express 12:00 delivery refund", keep) == \
        "macro for late Express 12:00 delivery refund"
    assert to_ethiopic("", keep) == ""


def test_wu_and_split_labialised_spellings_fold_for_lexical_matching(tmp_path):
    assert tokenize("ነዉ ዉስጥ") == tokenize("ነው ውስጥ")
    assert tokenize("ሁዋላ ሉዋ ኩዋስ ጉዋደኛ ቁዋንጣ") == tokenize("ኋላ ሏ ኳስ ጓደኛ ቋንጣ")
    assert tokenize("ዉሃ ወዋ") == tokenize("ውሀ ወዋ") == ["ውሀ", "ወዋ"]  # ወ + ዋ is no split spelling: left as it is
    LexicalIndex.build(tmp_path / "lex.sqlite", ["ጉዋደኛዬ ጋር ነዉ", "unrelated"])
    lex = LexicalIndex(tmp_path / "lex.sqlite")
    assert {i for i, _s in lex.search("ጓደኛ")} == {0}
    assert {i for i, _s in lex.search("ነው")} == {0}

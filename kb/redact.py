"""Scrub personal data from free text before it is stored (search logs, feedback, agent assist).

Customers paste tracking numbers, phone numbers and ID numbers into the search box; none of it may reach
the analytics tables. Each pattern replaces its match with a typed placeholder ([EMAIL], [PHONE], ...) so
reports still show *what kind* of thing people type. Patterns run in order, most specific first: a UPU
tracking number must become [TRACKING] before the EORI rule (EE is also Estonia) can see it, a card
number [CARD] before the 12-digit rule eats its first twelve digits. Twelve digits are ambiguous here
(Aadhaar, and SwiftParcel's 12-digit waybills): they are [AADHAAR] when named so or when they pass
Aadhaar's own structure (first digit 2-9, Verhoeff check digit), otherwise [TRACKING].

Boundaries are lookarounds on ASCII letters and digits, never ``\\b``: in Malayalam, Tamil, Bengali or
Hindi a number is often glued to a letter or combining mark (``4829301756-ൽ``, ``नंबर4829301756``) and
``\\b`` sees no boundary between two word characters. ``\\d`` is deliberate: numbers typed in Bengali or
Devanagari digits are redacted too.

Not personal and kept: HS/HSN/HTS tariff codes (masked before redaction and restored after, so even a
10-digit ``HTS 8517130000`` survives), dotted codes (``8517.13``), amounts, weights, years and dates.
"""

from __future__ import annotations

from collections.abc import Callable

import regex

# Neither side of a match may be an ASCII letter or any digit; decimals (``12.5``, ``1,250``) are not
# split into a number we would redact.
_L = r"(?<![A-Za-z\d])(?<!\d[.,])"
_R = r"(?![A-Za-z\d])(?![.,]\d)"
_F = regex.IGNORECASE | regex.VERSION1

_EU_UK = ("AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|GB|GR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI")

# HS codes: masked before redaction, restored after. The keyword may be followed by a word in any
# language ("HS কোড 8517.13", "HSN code: 85171300") before the number.
_HS = regex.compile(
    r"(?<![A-Za-z])(?:HSN?|HTS(?:US)?|H\.S\.)(?![A-Za-z])[^\d\n\[\]]{0,20}?\K\d{2,4}(?:[. ]?\d{2}){0,4}" + _R,
    _F,
)
_MASK_OPEN, _MASK_CLOSE = "\ue000", "\ue001"
_MASK_RE = regex.compile(_MASK_OPEN + r"([\ue100-\uf8ff])" + _MASK_CLOSE)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: regex.Match) -> str:
    """Longest prefix of whole digit groups that is 13-19 digits and passes Luhn; the rest is kept."""
    text = m.group(0)
    groups = regex.split(r"([ -])", text)  # digits, sep, digits, ...
    for end in range(len(groups), 0, -2):
        digits = "".join(groups[:end:2])
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return "[CARD]" + "".join(groups[end:])
    return text


# Verhoeff tables (dihedral group D5): Aadhaar's last digit is a Verhoeff check digit.
_VD = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VP = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def _verhoeff_ok(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VD[c][_VP[i % 8][int(ch)]]
    return c == 0


_AADHAAR_WORDS = regex.compile(r"aadhaa?r|uidai|(?<![A-Za-z])UID(?![A-Za-z])|आधार|ஆதார்|ആധാർ|আধার",
                               regex.IGNORECASE)


def _twelve_digits(m: regex.Match) -> str:
    """Aadhaar when it looks like one (never starts 0/1, Verhoeff check digit) or is called one;
    otherwise a 12-digit SwiftParcel waybill (``4821 0937 5516``)."""
    digits = regex.sub(r"\D", "", m.group(0))
    if m.group(1) and all(1900 <= int(digits[i : i + 4]) <= 2099 for i in (0, 4, 8)):
        return m.group(0)  # "2024 2025 2026": a list of years
    named = _AADHAAR_WORDS.search(m.string, max(0, m.start() - 40), m.start())
    if named or (digits[0] not in "01" and _verhoeff_ok(digits)):
        return "[AADHAAR]"
    return "[TRACKING]"


def _phone_intl(m: regex.Match) -> str:
    n = len(regex.findall(r"\d", m.group(0)))
    return "[PHONE]" if 8 <= n <= 15 else m.group(0)


# (name, pattern, replacement): order matters, specific before general.
_RULES: list[tuple[str, str, str | Callable[[regex.Match], str]]] = [
    ("email", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
              r"(?![A-Za-z0-9-])", "[EMAIL]"),
    # International phone numbers start with "+", which nothing else does: +91 98765 43210,
    # +251 91 123 4567, +44 20 7946 0958, +1 (212) 555-0123, +919876543210; or with the "00" exit code
    # and a separator after the country code (0044 20 7946 0958), so a 12-digit waybill starting 00 stays one.
    ("phone_intl", r"(?<![A-Za-z\d+])(?:\+\d{1,3}|(?<![\d.-]|\d[ .-])00\d{1,3}(?=[ .-]))(?:[ .-]?(?:\(\d{1,4}\)|\d{2,5})){1,6}" + _R,
     _phone_intl),
    ("ups", _L + r"1Z[0-9A-Z]{16}" + _R, "[TRACKING]"),
    ("s10", _L + r"(?:[A-Z]{2}\d{9}[A-Z]{2}|(?-i:[A-Z]{2} \d{3} \d{3} \d{3} [A-Z]{2}))" + _R, "[TRACKING]"),
    ("gstin", _L + r"\d{2}[A-Z]{5}\d{4}[A-Z][0-9A-Z]Z[0-9A-Z]" + _R, "[GSTIN]"),
    ("pan", _L + r"[A-Z]{5}\d{4}[A-Z]" + _R, "[PAN]"),  # also the modern IEC, which is the firm's PAN
    ("eori", _L + rf"(?:{_EU_UK})(?=(?:[A-Z]*\d){{4}})[0-9A-Z]{{5,15}}" + _R, "[EORI]"),
    ("ssn", _L + r"\d{3}-\d{2}-\d{4}" + _R, "[SSN]"),
    ("ein", _L + r"\d{2}-\d{7}" + _R, "[EIN]"),
    # An identifier announced by its name (Ethiopia TIN, Bangladesh BIN, old numeric IEC, VAT, tax ID):
    # typed [ID] rather than what its digits alone would suggest.
    ("keyword_id", r"(?<=(?<![A-Za-z])(?:e-?TIN|TIN|BIN|IEC|VAT|tax\s?ID|taxpayer\s?ID)(?![A-Za-z])"
                   r"[^\d\n\[\]]{0,20})(?<![A-Za-z\d])(?=(?:[A-Z-]*\d){8})[0-9A-Z][0-9A-Z-]{7,18}" + _R,
     "[ID]"),
    # Cards as people write them: 13-19 digits run together, 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4.
    ("card", _L + r"(?:\d{13,19}|\d{4}([ -])\d{4,6}(?:\1\d{3,5}){1,3})" + _R, _card),
    ("twelve_digits", _L + r"\d{4}([ -]?)\d{4}\1\d{4}" + _R, _twelve_digits),
    ("awb", _L + r"\d{3}-\d{8}" + _R, "[TRACKING]"),  # air waybill: airline prefix + 8 digits
    # Local phone forms: 09876543210, 0911234567, 98765-43210, 98765 43210, 020 7946 0958, (011) 2345-6789.
    ("phone_local", _L + r"(?:0[1-9]\d{8,9}|[6-9]\d{4}[ -]\d{5}|\(?0\d{1,4}\)?[ -]\d{3,4}[ -]?\d{3,4})" + _R,
     "[PHONE]"),
    ("long_number", _L + r"\d{10,}" + _R, "[TRACKING]"),  # SwiftParcel waybills; any other long run
    ("nine_digits", _L + r"\d{9}" + _R, "[ID]"),  # Bangladesh BIN (9-digit form)
]
_COMPILED = [(name, regex.compile(p, _F), r) for name, p, r in _RULES]


def redact(text: str) -> str:
    """``text`` with personal data replaced by typed placeholders; safe to store and to show in reports."""
    if not text:
        return text
    text = text.replace(_MASK_OPEN, "").replace(_MASK_CLOSE, "")
    kept: list[str] = []

    def _mask(m: regex.Match) -> str:
        if len(kept) >= 0xF8FF - 0xE100:
            return m.group(0)
        kept.append(m.group(0))
        return _MASK_OPEN + chr(0xE100 + len(kept) - 1) + _MASK_CLOSE

    text = _HS.sub(_mask, text)
    for _name, pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    if kept:
        text = _MASK_RE.sub(lambda m: kept[ord(m.group(1)) - 0xE100], text)
    return text

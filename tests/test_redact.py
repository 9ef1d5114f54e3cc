"""Redaction: every pattern in Latin text and inside Malayalam, Tamil, Bengali, Amharic and Hindi sentences
(spaced and glued to the script), and the things that must survive (HS codes, amounts, dates)."""

from __future__ import annotations

import pytest

from kb.redact import redact

# (sample as typed, what it must become). Keyword-led samples keep their keyword.
CASES = {
    "email": ("priya.k+parcels@example.co.in", "[EMAIL]"),
    "email_upper": ("Abebe.T@Mail.ET", "[EMAIL]"),
    "phone_in_intl": ("+91 98765 43210", "[PHONE]"),
    "phone_et_intl": ("+251 91 123 4567", "[PHONE]"),
    "phone_uk_intl": ("+44 20 7946 0958", "[PHONE]"),
    "phone_uk_exit_code": ("0044 20 7946 0958", "[PHONE]"),
    "waybill_leading_zeros": ("004821093755", "[TRACKING]"),
    "phone_us_intl": ("+1 (212) 555-0123", "[PHONE]"),
    "phone_intl_compact": ("+919876543210", "[PHONE]"),
    "phone_local_11": ("09876543210", "[PHONE]"),
    "phone_local_et": ("0911234567", "[PHONE]"),
    "phone_local_dash": ("98765-43210", "[PHONE]"),
    "phone_local_space": ("98765 43210", "[PHONE]"),
    "phone_local_uk": ("020 7946 0958", "[PHONE]"),
    "upu_s10": ("EE123456789IN", "[TRACKING]"),
    "upu_s10_lower": ("rr987654321bd", "[TRACKING]"),
    "upu_s10_spaced": ("EE 123 456 789 IN", "[TRACKING]"),
    "ups": ("1Z999AA10123456784", "[TRACKING]"),
    "swiftparcel_10": ("4829301756", "[TRACKING]"),
    "swiftparcel_12_spaced": ("4821 0937 5516", "[TRACKING]"),
    "air_waybill": ("071-12345675", "[TRACKING]"),
    "long_digit_run": ("123456789012345678901", "[TRACKING]"),
    "card_spaced": ("4111 1111 1111 1111", "[CARD]"),
    "card_dashed": ("5500-0000-0000-0004", "[CARD]"),
    "card_plain": ("4012888888881881", "[CARD]"),
    "card_amex": ("3782 822463 10005", "[CARD]"),
    "aadhaar_444": ("2345 6789 0124", "[AADHAAR]"),
    "aadhaar_dashed": ("2345-6789-0124", "[AADHAAR]"),
    "aadhaar_plain": ("234567890124", "[AADHAAR]"),
    "aadhaar_named": ("Aadhaar 4821 0937 5516", "Aadhaar [AADHAAR]"),
    "pan": ("ABCPE1234F", "[PAN]"),
    "gstin": ("27AAPFU0939F1ZV", "[GSTIN]"),
    "iec_pan_form": ("IEC AAPFU0939F", "IEC [PAN]"),
    "iec_numeric": ("IEC 0304012345", "IEC [ID]"),
    "eori_gb": ("GB123456789000", "[EORI]"),
    "eori_de": ("DE1234567", "[EORI]"),
    "eori_fr_siret": ("FR12345678900017", "[EORI]"),
    "ein": ("12-3456789", "[EIN]"),
    "ssn": ("123-45-6789", "[SSN]"),
    "bd_bin_9": ("123456789", "[ID]"),
    "bd_bin_13": ("BIN 1234567890123", "BIN [ID]"),
    "et_tin": ("TIN 0012345678", "TIN [ID]"),
    "vat_number": ("VAT GB 123456789", "VAT GB [ID]"),
}

# Each language twice: with spaces around the value, and glued to the script (suffixes, no space).
SURROUNDINGS = {
    "latin": "Hello, my details: {} - please help",
    "latin_glued": "ref:{}.",
    "ml": "എന്റെ വിവരം {} ആണ്, സഹായിക്കൂ",
    "ml_glued": "നമ്പർ{}ൽ",
    "ta": "என் விவரம் {} உதவுங்கள்",
    "ta_glued": "எண்{}இல்",
    "bn": "আমার তথ্য {} দয়া করে সাহায্য করুন",
    "bn_glued": "নম্বর{}টা",
    "am": "መረጃዬ {} ነው። እባክዎ ይርዱኝ",
    "am_glued": "ቁጥር{}ነው።",
    "hi": "मेरी जानकारी {} है, मदद करें।",
    "hi_glued": "नंबर{}है",
}


@pytest.mark.parametrize("where", list(SURROUNDINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_pattern_in_every_script(case: str, where: str) -> None:
    sample, expected = CASES[case]
    template = SURROUNDINGS[where]
    out = redact(template.format(sample))
    assert out == template.format(expected)
    assert redact(out) == out  # placeholders are never re-matched


# Not personal: must come back unchanged, alone and inside every script.
KEEP = [
    "2 kg", "30 x 20 x 15 cm", "160 Wh", "USD 800", "₹18,000", "3,500 ብር", "1,250.50", "20%",
    "HS 8517.13", "HS code 8517.13.00", "HSN 85171300", "HTS 8517130000", "HS 620520", "HS 2022",
    "0910.30", "6109.10", "in 2024", "Incoterms 2020", "2026-11-01", "15/03/2026", "12.03.2026",
    "9:00, 12:00", "60,000 / 5000", "order 12345678", "2024 2025 2026", "ISO 3166", "DDP", "PIN 682001",
    "100-160", "1/2 and 2/2", "EU", "VAT 20%",
]


@pytest.mark.parametrize("where", list(SURROUNDINGS))
@pytest.mark.parametrize("text", KEEP)
def test_not_personal_survives(text: str, where: str) -> None:
    template = SURROUNDINGS[where]
    if where.endswith("glued"):
        template = template.replace("{}", " {} ")
    s = template.format(text)
    assert redact(s) == s


@pytest.mark.parametrize("text", [
    "HS কোড 8517.13",  # keyword, then a word in the script, then the code
    "എച്ച്എസ് കോഡ് HS 8471.30 ആണ്",
    "HS குறியீடு 8517.13.00",
    "HTS: 8517130000 है",
    "HS ኮድ 6109.10 ነው",
])
def test_hs_codes_in_scripts(text: str) -> None:
    assert redact(text) == text


def test_several_in_one_message() -> None:
    text = ("ሰላም፣ ፓርሴል EE123456789IN ቦሌ ላይ ተይዟል (HS 8471.30, 2 kg, USD 850)። ስልኬ +251 91 123 4567፣ "
            "ኢሜይል abebe@example.com፣ TIN 0012345678።")
    assert redact(text) == ("ሰላም፣ ፓርሴል [TRACKING] ቦሌ ላይ ተይዟል (HS 8471.30, 2 kg, USD 850)። ስልኬ [PHONE]፣ "
                            "ኢሜይል [EMAIL]፣ TIN [ID]።")


def test_native_digits_are_redacted() -> None:
    assert redact("ট্র্যাকিং ৯৮৭৬৫৪৩২১০ কোথায়") == "ট্র্যাকিং [TRACKING] কোথায়"
    assert redact("नंबर ९८७६५४३२१० है") == "नंबर [TRACKING] है"


def test_card_needs_luhn() -> None:
    assert redact("4111 1111 1111 1111") == "[CARD]"
    assert "[CARD]" not in redact("4111 1111 1111 1112")  # not a card (other rules may still apply)
    assert redact("4111 1111 1111 1111 2 kg") == "[CARD] 2 kg"


def test_twelve_digits_typed_by_structure() -> None:
    assert redact("2345 6789 0124") == "[AADHAAR]"  # 2-9 start, Verhoeff check digit
    assert redact("2345 6789 0125") == "[TRACKING]"  # fails Verhoeff: a 12-digit waybill
    assert redact("ആധാർ 4821 0937 5516") == "ആധാർ [AADHAAR]"  # named in Malayalam


def test_empty_and_plain() -> None:
    assert redact("") == ""
    assert redact("where is my parcel?") == "where is my parcel?"
    assert redact("আমার পার্সেল কাস্টমসে আটকে আছে") == "আমার পার্সেল কাস্টমসে আটকে আছে"

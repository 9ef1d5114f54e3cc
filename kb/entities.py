"""Entities an agent needs at a glance in a ticket: tracking numbers, HS codes, countries, weights, amounts,
documents.

Tracking numbers recognised (documented in articles/tracking/tracking-number-formats): UPU S10
(``EE123456789IN``: 2 letters, 8 digits + check digit, 2-letter country), SwiftParcel waybills of 12 digits
(older labels: 10), 1Z-style carrier numbers (``1Z`` + 16 letters/digits), and master air waybills (``071-12345675``:
a 3-digit airline prefix and 8 digits, the last the first seven mod 7, as articles/documentation/air-waybill says;
the check keeps 11-digit phone numbers out).

Country names are inflected in most of the languages served: Tamil and Malayalam add case endings to the
name (இந்தியாவுக்கு, இலங்கையில், ഇന്ത്യയിലേക്ക്), Bengali too (ভারতে), Amharic puts prepositions in front
(ከኢትዮጵያ). A name matches as the start of a word followed by one of its script's known endings (after the
glide or oblique stem the ending needs), never as the start of any longer word: भारती is a name, not India.
"""

from __future__ import annotations

import math
import unicodedata

import regex

A = r"(?<![A-Za-z0-9])"
Z = r"(?![A-Za-z0-9])"
TRACKING = [
    ("s10", regex.compile(A + r"[A-Z]{2}\d{9}[A-Z]{2}" + Z)),
    ("ups", regex.compile(A + r"1Z[0-9A-Z]{16}" + Z)),
    ("swiftparcel", regex.compile(A + r"(?:\d{12}|\d{10})" + Z)),
    ("mawb", regex.compile(A + r"\d{3}(?:-|\s)?\d{4}\s?\d{4}" + Z)),
]


def _mawb_valid(number: str) -> bool:
    """IATA check digit: the serial's first seven digits mod 7 are its eighth."""
    serial = regex.sub(r"\D", "", number)[3:]
    return int(serial[:7]) % 7 == int(serial[7])


VALID = {"mawb": _mawb_valid}  # formats with a check beyond the pattern
HS_CODE = regex.compile(r"(?i)(?:HS|H\.S\.|hs\s*code|tariff|എച്ച്എസ്|এইচএস|ஹெச்எஸ்|एचएस)[^\d\n]{0,15}"
                        r"(\d{4}(?:[.\s]?\d{2}){0,3})(?!\d)")
WEIGHT = regex.compile(r"(?i)(\d+(?:[.,]\d+)?)\s*(kg|kgs|kilo(?:gram)?s?|g|grams?|lbs?|pounds?|"
                       r"കിലോ|കി\.ഗ്രാം|কেজি|কিলো|கிலோ|கி\.கி|ኪሎ(?:ግራም)?|किलो|किग्रा)(?![\p{L}])")
AMOUNT = regex.compile(r"(?i)(?:(USD|INR|EUR|GBP|AED|BDT|LKR|ETB|Rs\.?|Tk\.?|US\$|\$|₹|€|£|৳|ብር)\s?"
                       r"(\d[\d,]*(?:\.\d+)?)|(\d[\d,]*(?:\.\d+)?)\s?(USD|INR|EUR|GBP|AED|BDT|LKR|ETB|dollars?|"
                       r"rupees?|euros?|taka|birr|ടാക്ക|രൂപ|টাকা|ரூபாய்|ብር|रुपये|रुपए|डॉलर|ডলার|டாலர்|ഡോളർ))")
CURRENCY = {"$": "USD", "US$": "USD", "₹": "INR", "RS": "INR", "RS.": "INR", "€": "EUR", "£": "GBP", "৳": "BDT",
            "TK": "BDT", "TK.": "BDT", "ብር": "ETB", "DOLLAR": "USD", "DOLLARS": "USD", "RUPEE": "INR",
            "RUPEES": "INR", "EURO": "EUR", "EUROS": "EUR", "TAKA": "BDT", "BIRR": "ETB", "രൂപ": "INR",
            "টাকা": "BDT", "ரூபாய்": "INR", "रुपये": "INR", "रुपए": "INR", "डॉलर": "USD", "ডলার": "USD",
            "டாலர்": "USD", "ഡോളർ": "USD", "ടാക്ക": "BDT"}
COUNTRIES = {  # names as customers write them, "|"-separated (Latin: also as romanized Indic and Amharic write them)
    "IN": "india|bharat|bharath|hindustan|indiya|ሕንድ|ഇന്ത്യ|ভারত|இந்தியா|ህንድ|भारत|इंडिया|ইন্ডিয়া",
    "BD": "bangladesh|bangla desh|bangladesch|ബംഗ്ലാദേശ്|বাংলাদেশ|வங்கதேசம்|பங்களாதேஷ்|ባንግላዴሽ|बांग्लादेश",
    "LK": "sri lanka|srilanka|shri lanka|ilangai|ശ്രീലങ്ക|শ্রীলঙ্কা|இலங்கை|ஸ்ரீலங்கா|ስሪላንካ|श्रीलंका",
    "ET": "ethiopia|ethiopiya|ityopia|ityopiya|itiyopiya|ኢትዮጲያ|എത്യോപ്യ|ইথিওপিয়া|எத்தியோப்பியா|ኢትዮጵያ|इथियोपिया",
    "AE": "uae|dubai|dubay|emirates|amirat|emirat|united arab emirates|യുഎഇ|ദുബായ്|সংযুক্ত আরব আমিরাত|দুবাই|ஐக்கிய அரபு அமீரகம்|துபாய்|ዱባይ|दुबई|यूएई",
    "GB": "united kingdom|britain|england|london|inglend|ingland|landan|യുകെ|ব্রিটেন|যুক্তরাজ্য|லண்டன்|இங்கிலாந்து|እንግሊዝ|ब्रिटेन|यूके|लंदन",
    "US": "usa|united states|america|amerika|amrika|amreeka|amerikka|അമേരിക്ക|আমেরিকা|அமெரிக்கா|አሜሪካ|अमेरिका",
    "EU": "european union|europe|യൂറോപ്പ്|ইউরোপ|ஐரோப்பா|አውሮፓ|यूरोप",
    "DE": "germany|jarmani|jermany|ജർമ്മനി|জার্মানি|ஜெர்மனி|ጀርመን|जर्मनी",
    "SA": "saudi arabia|saudi|സൗദി|সৌদি|சவுதி|ሳዑዲ|सऊदी",
    "CA": "canada|kanada|കാനഡ|কানাডা|கனடா|ካናዳ|कनाडा",
    "AU": "australia|ostrelia|astrelia|ഓസ്ട്രേലിയ|অস্ট্রেলিয়া|ஆஸ்திரேலியா|አውስትራሊያ|ऑस्ट्रेलिया",
}
DOCUMENTS = {
    "commercial invoice": "commercial invoice|കൊമേഴ്സ്യൽ ഇൻവോയ്സ്|বাণিজ্যিক চালান|কমার্শিয়াল ইনভয়েস|வணிக விலைப்பட்டியல்|"
                          "கமர்ஷியல் இன்வாய்ஸ்|የንግድ ደረሰኝ|ኢንቮይስ|कमर्शियल इनवॉइस|वाणिज्यिक चालान",
    "proforma invoice": "pro ?forma invoice|proforma",
    "invoice": "invoice|ഇൻവോയ്സ്|ইনভয়েস|இன்வாய்ஸ்|इनवॉइस|चालान",
    "packing list": "packing list|പാക്കിംഗ് ലിസ്റ്റ്|প্যাকিং লিস্ট|பேக்கிங் பட்டியல்|पैकिंग लिस्ट",
    "certificate of origin": "certificate of origin",
    "air waybill": "air ?waybill|AWB",
    "power of attorney": "power of attorney|authori[sz]ation letter",
    "KYC": "KYC|കെവൈസി|কেওয়াইসি|கேஒய்சி|केवाईसी",
    "IEC": "IEC",
    "GSTIN": "GSTIN|GST number",
    "EORI": "EORI",
    "BIN": "BIN",
    "EIN": "EIN",
    "passport": "passport|പാസ്പോർട്ട്|পাসপোর্ট|பாஸ்போர்ட்|ፓስፖርት|पासपोर्ट",
    "Aadhaar": "aadhaar|aadhar|ആധാർ|আধার|ஆதார்|आधार",
    "PAN": "PAN card|PAN",
}
# Endings a country name takes, per script, as written after the stem (see _stems). Tamil and Malayalam
# endings start with a vowel sign: they follow a glide consonant (இந்தியா+வ+ுக்கு), a consonant whose virama
# they replace (பங்களாதேஷ்+ு...) or the oblique -த்த- of names in -ம் (வங்கதேசம் -> வங்கதேசத்தில்).
# CONSONANT_ENDINGS attach to the name as written (இலங்கைக்கு, ഇന്ത്യക്ക്).
ENDINGS = {
    "Latin": ["n", "an", "ns", "ans", "i", "is", "'s", "’s"],  # indian, european, bangladeshi, usa's
    "Tamil": ["ுக்கு", "ுக்குப்", "ுக்குள்", "ிற்கு", "ில்", "ிலே", "ிலும்", "ிலேயே", "ிலுள்ள", "ிலிருந்து",
              "ின்", "ை", "ைப்", "ையும்", "ுடன்", "ோடு", "ிடம்", "ும்", "ா"],
    "Malayalam": ["ിലേക്ക്", "ിലേക്കുള്ള", "ിലേയ്ക്ക്", "ിൽ", "ിൽനിന്ന്", "ിൽനിന്നും", "ിലെ", "ിലും", "ിലാണ്",
                  "ിലുള്ള", "ുടെ", "െ", "ോട്", "ും", "ോ"],
    "Bengali": ["ে", "ের", "েও", "েই", "েরও", "কে", "তে", "য়", "য়ে", "য়ের", "র", "রও", "য়ও", "ও", "ীয়", "ি", "গামী"],
    "Devanagari": ["ीय", "ई", "वासी"],  # भारतीय, कनाडाई; postpositions (भारत में) are words of their own
    "Ethiopic": ["ን", "ም", "ስ", "ና", "ዊ", "ዊት", "ውያን", "ዊያን"],  # ኢትዮጵያን, ኢትዮጵያዊ
}
NAMES = {"bharati", "bharathi"}  # people's names that look like a country name with an ending (bharat + i)
CONSONANT_ENDINGS = {"Tamil": ["க்கு", "க்குப்"], "Malayalam": ["ക്ക്", "ക്കും", "ക്കുള്ള"]}
# prepositions Amharic writes joined to the name: ከኢትዮጵያ (from), በ (in), ለ (for), የ (of), ወደ (to)
PREFIXES = {"Ethiopic": ["ከ", "በ", "ለ", "የ", "ወደ", "ስለ", "እስከ", "እንደ"]}
VIRAMA = {"Tamil": "\u0bcd", "Malayalam": "\u0d4d"}
GLIDE_V = {"Tamil": ("வ", "ாூோௌ"), "Malayalam": ("വ", "ുൂോൌ")}  # u/o-final: வ/വ glide, any other vowel: ய/യ
GLIDE_Y = {"Tamil": "ய", "Malayalam": "യ"}
OBLIQUE_M = {"Tamil": ("ம்", "த்த")}  # -ம் nouns decline on -த்த-
CHILLU = {"ൽ": "ല", "ൻ": "ന", "ർ": "ര", "ൾ": "ള", "ൺ": "ണ"}  # Malayalam final consonants without a virama
OLD_CHILLU = regex.compile("([ലനരളണ])\u0d4d\u200d")  # the pre-Unicode-5.1 way of writing a chillu
ATOMIC_CHILLU = {v: k for k, v in CHILLU.items()}


def _script(name: str) -> str:
    for ch in name:
        if ch.isalpha():
            return unicodedata.name(ch).split()[0].title() if ord(ch) > 0x7F else "Latin"
    return "Latin"


def _stems(name: str, script: str) -> list[str]:
    """Forms of ``name`` a vowel-sign ending can follow (Tamil and Malayalam), see ENDINGS."""
    if script not in VIRAMA:
        return []
    last = name[-1]
    if script == "Malayalam" and last in CHILLU:
        return [name[:-1] + CHILLU[last]]
    m = OBLIQUE_M.get(script)
    if m and name.endswith(m[0]):
        return [name[: -len(m[0])] + m[1]]
    if last == VIRAMA[script]:
        return [name[:-1]]
    if script == "Tamil" and last == "ு":  # a final short u drops before a vowel: இங்கிலாந்து -> இங்கிலாந்தில்
        return [name[:-1]]
    glide, u_vowels = GLIDE_V[script]
    return [name + (glide if last in u_vowels else GLIDE_Y[script])]


def _alternation(words: list[str]) -> str:
    return "|".join(regex.escape(w).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True))


def country_pattern(names: list[str]) -> regex.Pattern:
    """One name list as a regex: each name whole, or followed by an ending of its script (see ENDINGS)."""
    parts = []
    for name in names:
        name = normalize_text(name)
        script = _script(name)
        forms = [name] + [name + e for e in CONSONANT_ENDINGS.get(script, [])]
        if script in VIRAMA:
            forms += [stem + e for stem in _stems(name, script) for e in ENDINGS[script]]
        else:
            forms += [name + e for e in ENDINGS.get(script, []) if name + e not in NAMES]
        if script == "Devanagari" and name.endswith("ा"):
            forms.append(name[:-1] + "ी")  # अमेरिका -> अमेरिकी (American)
        prefix = PREFIXES.get(script)
        parts.append((f"(?:{_alternation(prefix)})?" if prefix else "") + f"(?:{_alternation(forms)})")
    return regex.compile(r"(?i)(?<![\p{L}\p{M}])(?:" + "|".join(parts) + r")(?![\p{L}\p{M}])")


def normalize_text(text: str) -> str:
    """NFC, Malayalam chillus in their atomic form, joiners removed: one spelling per word to match."""
    text = OLD_CHILLU.sub(lambda m: ATOMIC_CHILLU[m.group(1)], unicodedata.normalize("NFC", text))
    return text.replace("\u200c", "").replace("\u200d", "")


COUNTRY_RE = [(code, country_pattern(names.split("|"))) for code, names in COUNTRIES.items()]
COUNTRY_CODE = regex.compile(r"(?<![A-Za-z0-9])(IN|BD|LK|ET|AE|GB|UK|US|EU)(?![A-Za-z0-9])")
DOCUMENT_RE = [(name, regex.compile(r"(?<![\p{L}])(?:" + pat + r")(?![\p{L}])",
                                    0 if name in ("IEC", "BIN", "EIN", "PAN", "AWB") else regex.IGNORECASE))
               for name, pat in DOCUMENTS.items()]


def _shouted(text: str, m: regex.Match) -> bool:
    """Whether the other words on the line of a country code match are capitals too (then IN, US are
    words, not country codes: "STUCK IN CUSTOMS, PLEASE HELP US")."""
    start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.end())
    line = text[start:] if end < 0 else text[start:end]
    others = [w for w in regex.findall(r"[A-Za-z]{2,}", line) if w != m.group(0)]
    return bool(others) and sum(w.isupper() for w in others) > len(others) / 2


def find_tracking(text: str) -> list[dict]:
    """Tracking numbers in ``text`` as {"value", "format"}, first occurrence each (assist and search)."""
    found: list[dict] = []
    for kind, rx in TRACKING:
        for m in rx.finditer(text):
            if kind in VALID and not VALID[kind](m.group(0)):
                continue
            if not any(t["value"] == m.group(0) for t in found):
                found.append({"value": m.group(0), "format": kind})
    return found


def extract_entities(text: str) -> dict[str, list]:
    """Entities an agent needs at a glance; works on the original (unredacted) text."""
    tracking = find_tracking(text)
    hs = sorted({regex.sub(r"\s", "", m.group(1)) for m in HS_CODE.finditer(text)})
    tracked = {t["value"] for t in tracking}
    hs = [h for h in hs if h not in tracked]
    countries: list[str] = []
    normalized = normalize_text(text)
    for code, rx in COUNTRY_RE:
        if rx.search(normalized) and code not in countries:
            countries.append(code)
    for m in COUNTRY_CODE.finditer(text):
        if _shouted(text, m):
            continue
        code = "GB" if m.group(1) == "UK" else m.group(1)
        if code not in countries:
            countries.append(code)
    # a run of 400 digits parses as inf, which is no JSON number: such "numbers" are left out
    weights = [{"value": v, "unit": m.group(2)} for m in WEIGHT.finditer(text)
               if math.isfinite(v := float(m.group(1).replace(",", ".")))]
    amounts = []
    for m in AMOUNT.finditer(text):
        cur, num = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        code = CURRENCY.get(cur.upper(), CURRENCY.get(cur, cur.upper()))
        try:
            value = float(num.replace(",", ""))
        except ValueError:
            continue
        if math.isfinite(value):
            amounts.append({"value": value, "currency": code})
    documents = [name for name, rx in DOCUMENT_RE if rx.search(text)]
    if "commercial invoice" in documents or "proforma invoice" in documents:
        documents = [d for d in documents if d != "invoice"]
    return {"tracking_numbers": tracking, "hs_codes": hs, "countries": countries, "weights": weights,
            "amounts": amounts, "documents": documents}

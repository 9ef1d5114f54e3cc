"""Agent assist: ticket or chat text in, entities and suggested articles out.

A pasted ticket is not embedded as one blob (greetings, signatures and order numbers drown the
question). Sentences are scored for whether they carry the question, grouped, searched one group at a
time, and the per-group rankings merged by reciprocal rank.

Tracking numbers recognised (documented in articles/tracking/tracking-number-formats): UPU S10
(``EE123456789IN``: 2 letters, 8 digits + check digit, 2-letter country), (see that article),
SwiftParcel waybills of 12 digits (older labels: 10), and 1Z-style carrier numbers (``1Z`` + 16 letters/digits).
"""

from __future__ import annotations

import math

import regex

from .search import Filters, Searcher

MAX_CHARS = 5000
A = r"(?<![A-Za-z0-9])"
Z = r"(?![A-Za-z0-9])"
TRACKING = [
    ("s10", regex.compile(A + r"[A-Z]{2}\d{9}[A-Z]{2}" + Z)),
    ("ups", regex.compile(A + r"1Z[0-9A-Z]{16}" + Z)),
    ("swiftparcel", regex.compile(A + r"(?:\d{12}|\d{10})" + Z)),
]
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
COUNTRIES = {  # names as customers write them, "|"-separated
    "IN": "india|ഇന്ത്യ|ভারত|இந்தியா|ህንድ|भारत|इंडिया|ইন্ডিয়া",
    "BD": "bangladesh|ബംഗ്ലാദേശ്|বাংলাদেশ|வங்கதேசம்|பங்களாதேஷ்|ባንግላዴሽ|बांग्लादेश",
    "LK": "sri lanka|ശ്രീലങ്ക|শ্রীলঙ্কা|இலங்கை|ஸ்ரீலங்கா|ስሪላንካ|श्रीलंका",
    "ET": "ethiopia|എത്യോപ്യ|ইথিওপিয়া|எத்தியோப்பியா|ኢትዮጵያ|इथियोपिया",
    "AE": "uae|dubai|united arab emirates|യുഎഇ|ദുബായ്|সংযুক্ত আরব আমিরাত|দুবাই|ஐக்கிய அரபு அமீரகம்|துபாய்|ዱባይ|दुबई|यूएई",
    "GB": "united kingdom|britain|england|london|യുകെ|ব্রিটেন|যুক্তরাজ্য|லண்டன்|இங்கிலாந்து|እንግሊዝ|ब्रिटेन|यूके|लंदन",
    "US": "usa|united states|america|അമേരിക്ക|আমেরিকা|அமெரிக்கா|አሜሪካ|अमेरिका",
    "EU": "european union|europe|യൂറോപ്പ്|ইউরোপ|ஐரோப்பா|አውሮፓ|यूरोप",
    "DE": "germany|ജർമ്മനി|জার্মানি|ஜெர்மனி|ጀርመን|जर्मनी",
    "SA": "saudi arabia|saudi|സൗദി|সৌদি|சவுதி|ሳዑዲ|सऊदी",
    "CA": "canada|കാനഡ|কানাডা|கனடா|ካናዳ|कनाडा",
    "AU": "australia|ഓസ്ട്രേലിയ|অস্ট্রেলিয়া|ஆஸ்திரேலியா|አውስትራሊያ|ऑस्ट्रेलिया",
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
COUNTRY_RE = [
    (code, regex.compile(r"(?i)(?<![\p{L}\p{M}])(?:" + "|".join(regex.escape(w) for w in names.split("|")) + ")"))
    for code, names in COUNTRIES.items()
]
COUNTRY_CODE = regex.compile(r"(?<![A-Za-z0-9])(IN|BD|LK|ET|AE|GB|UK|US|EU)(?![A-Za-z0-9])")
DOCUMENT_RE = [(name, regex.compile(r"(?<![\p{L}])(?:" + pat + r")(?![\p{L}])",
                                    0 if name in ("IEC", "BIN", "EIN", "PAN", "AWB") else regex.IGNORECASE))
               for name, pat in DOCUMENTS.items()]
QUESTION_WORDS = regex.compile(
    r"(?i)\?|\b(how|what|why|when|where|can|could|should|do i|is it|need|help|please|stuck|held|lost|damaged|"
    r"delay|refund|return|charge|duty|customs|invoice|missing|not received|wrong|change|cancel)\b|"
    r"എന്ത|എങ്ങനെ|എപ്പോൾ|എന്തുകൊണ്ട്|কি|কীভাবে|কেন|কবে|কোথায়|என்ன|எப்படி|ஏன்|எப்போது|ምን|እንዴት|ለምን|መቼ|"
    r"क्या|कैसे|क्यों|कब|कहाँ|कृपया")
GREETING = regex.compile(r"(?i)^\s*(hi|hello|dear|thanks|thank you|regards|best|sincerely|sent from|"
                         r"നമസ്കാരം|নমস্কার|வணக்கம்|ሰላም|नमस्ते|धन्यवाद|ধন্যবাদ|நன்றி|നന്ദി|አመሰግናለሁ)\b")
SENTENCE_SPLIT = regex.compile(r"(?<=[.!?।।።?])\s+|\n+")


def extract_entities(text: str) -> dict[str, list]:
    """Entities an agent needs at a glance; works on the original (unredacted) text."""
    tracking = []
    for kind, rx in TRACKING:
        for m in rx.finditer(text):
            if not any(t["value"] == m.group(0) for t in tracking):
                tracking.append({"value": m.group(0), "format": kind})
    hs = sorted({regex.sub(r"\s", "", m.group(1)) for m in HS_CODE.finditer(text)})
    tracked = {t["value"] for t in tracking}
    hs = [h for h in hs if h not in tracked]
    countries: list[str] = []
    for code, rx in COUNTRY_RE:
        if rx.search(text) and code not in countries:
            countries.append(code)
    for m in COUNTRY_CODE.finditer(text):
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


def question_groups(text: str, max_groups: int = 4) -> list[str]:
    """Sentences that carry the question, in groups of up to two neighbours."""
    sentences = [s.strip() for s in SENTENCE_SPLIT.split(text) if len(s.strip()) > 2]
    scored = []
    for i, s in enumerate(sentences):
        if GREETING.match(s) and len(s.split()) < 6:
            continue
        score = len(QUESTION_WORDS.findall(s)) + (1 if len(s.split()) > 4 else 0)
        scored.append((score, i, s))
    if not scored:
        return [text[:1000]] if text.strip() else []
    best = sorted(scored, key=lambda x: (-x[0], x[1]))[: max_groups * 2]
    best.sort(key=lambda x: x[1])
    groups: list[str] = []
    for _score, _i, s in best:
        if groups and len(groups[-1]) + len(s) < 400 and len(groups) >= max_groups:
            groups[-1] += " " + s
        elif groups and len(groups[-1].split()) < 12:
            groups[-1] += " " + s
        else:
            groups.append(s)
    return groups[:max_groups]


def assist(searcher: Searcher, text: str, lang: str | None = None, limit: int = 5,
           audience: str = "internal") -> dict:
    """Entities + merged suggestions for a ticket (``text`` already capped at MAX_CHARS by the caller)."""
    text = text[:MAX_CHARS]
    entities = extract_entities(text)
    guess = searcher.detect(text)
    groups = question_groups(text)
    fused: dict[str, float] = {}
    cards: dict[str, dict] = {}
    countries = [c for c in entities["countries"] if c != "EU"] or None
    for g in groups:
        res = searcher.search(g, Filters(audience=audience), limit=8, guess=guess)
        for rank, r in enumerate(res["results"]):
            key = r["group"]
            fused[key] = fused.get(key, 0.0) + 1.0 / (60 + rank + 1)
            if key not in cards or r["dense_score"] > cards[key]["dense_score"]:
                cards[key] = r
    if countries:  # a ticket naming a country: its country guide is a good extra suggestion
        for key, card in cards.items():
            if set(card["countries"]) & set(countries):
                fused[key] += 0.002
    ranked = sorted(fused, key=lambda k: -fused[k])[:limit]
    if audience == "internal" and groups and not any(cards[k]["audience"] == "internal" for k in ranked):
        # agents need the procedure as well as the customer-facing answer: keep one slot for the best
        # internal article. Internal procedures are written in English, so the search pivots through the
        # English titles of the best public answers rather than matching the ticket across languages.
        pivot = ". ".join(searcher.source_title(k) for k in ranked[:3]) if ranked else " ".join(groups)
        res = searcher.search(pivot, Filters(audience="internal", internal_only=True), limit=1)
        if res["results"]:
            best = res["results"][0]
            cards[best["group"]] = best
            fused[best["group"]] = 0.0
            ranked = ranked[: max(limit - 1, 0)] + [best["group"]]
    suggestions = [dict(cards[k], score=round(fused[k], 6)) for k in ranked]
    top = max((s["confidence"] for s in suggestions), default=0.0)
    return {"detected_lang": lang or guess.lang, "entities": entities, "question_groups": groups,
            "suggestions": suggestions, "no_confident_answer": top < 0.5}

"""Agent assist: ticket or chat text in, entities and suggested articles out.

A pasted ticket is not embedded as one blob (greetings, signatures and order numbers drown the
question). A pasted chat log is cut into speaker turns first and only the customer's turns are kept: the
agent's own lines ("how can I help?", "may I have the tracking number?") are not the question. Sentences are
scored for whether they carry the question, grouped, searched one group at a time, and the per-group
rankings merged by reciprocal rank.

Entity extraction lives in kb.entities (names re-exported here).
"""

from __future__ import annotations

import regex

from .entities import TRACKING, extract_entities
from .search import Filters, Searcher

__all__ = ["MAX_CHARS", "TRACKING", "assist", "customer_text", "extract_entities", "question_groups", "speaker_turns"]

MAX_CHARS = 5000
QUESTION_WORDS = regex.compile(
    r"(?i)\?|\b(how|what|why|when|where|can|could|should|do i|is it|need|help|please|stuck|held|lost|damaged|"
    r"delay|refund|return|charge|duty|customs|invoice|missing|not received|wrong|change|cancel)\b|"
    r"(?<![\p{L}\p{M}])(?:"  # the start of a word: কি is a word, not the middle of ট্র্যাকিং
    r"എന്ത|എങ്ങനെ|എപ്പോൾ|എന്തുകൊണ്ട്|কি|কীভাবে|কেন|কবে|কোথায়|என்ன|எப்படி|ஏன்|எப்போது|ምን|እንዴት|ለምን|መቼ|"
    r"क्या|कैसे|क्यों|कब|कहाँ|कृपया)")
# What went wrong, in the languages served (stems: Tamil, Malayalam... inflect them), by kind of problem: a
# sentence naming the problem carries the question as much as one asking it, and the kind is searched too (see
# assist). Words that name no one kind (loss or damage: நஷ்ட, नुकसान, നഷ്ട; claim, refund, return) only score.
PROBLEMS = {
    "damage": (r"\b(?:broken|broke|damaged?|crushed|dented|smashed|cracked|wet|soaked|leak\w*|ruined|torn)\b|"
               r"உடை|சேத|நனை|நசுங்|கிழி|टूट|क्षति|खराब|भीग|പൊട്ടി|കേട|നനഞ്ഞ|ചതഞ്ഞ|"
               r"ভাঙ|ভেঙে|ক্ষতি|ভেজা|ভিজে|নষ্ট|দুমড়|ተሰብ|ተበላሽ|ጉዳት|ርሶ|ረጥብ",
               "my parcel arrived damaged and the item inside is broken"),
    "delay": (r"\b(?:late|delayed)\b|தாமத|देरी|വൈക|দেরি|ዘገየ", "my parcel is delayed, it is late"),
    "lost": (r"\b(?:lost|missing)\b|காணவில்லை|தொலை|गुम|खो गया|കാണാതാ|হারিয়ে|ጠፍቷ", "my parcel is lost"),
    "customs": (r"\b(?:seized|customs)\b|சுங்க|कस्टम|കസ്റ്റംസ|কাস্টমস|ጉምሩክ", "my parcel is held at customs"),
}
PROBLEM_KINDS = {kind: (regex.compile("(?i)" + rx), query) for kind, (rx, query) in PROBLEMS.items()}
PROBLEM_WORDS = regex.compile(
    r"(?i)\b(claim|compensation|stuck|held|return\w*|refund)\b|இழப்பீடு|நஷ்ட|नुकसान|मुआवज|क्लेम|നഷ്ട|"
    r"ക്ലെയിം|ক্লেইম|ካሳ|" + "|".join(rx for rx, _q in PROBLEMS.values()))
REFERENCE_WORDS = 5  # a sentence of an identifier and at most this many words is only a reference
COUNTRY_BONUS = 0.002  # RRF score added to articles for a country the ticket names
CONTEXT_WORDS = 8  # a sentence shorter than this joins the group before it
GREETING = regex.compile(r"(?i)^\s*(hi|hello|dear|thanks|thank you|regards|best|sincerely|sent from|"
                         r"നമസ്കാരം|নমস্কার|வணக்கம்|ሰላም|नमस्ते|धन्यवाद|ধন্যবাদ|நன்றி|നന്ദി|አመሰግናለሁ)\b")
SENTENCE_SPLIT = regex.compile(r"(?<=[.!?।।።?])\s+|\n+")


# Chat logs. A turn starts with a speaker label: an optional time stamp, a role word (optionally with a name:
# "Support - Priya", "Agent Ravi", "Customer (Anu)"), another optional stamp, a colon. Only role words open a
# label, so "Note:", "Subject:" or "Tracking number:" in a plain ticket are text. "Me" is the customer: it is
# how a customer's own chat app labels their lines when they paste a conversation into a ticket. A name alone
# ("Priya (09:12):") is a label only with a time stamp; its role is the other side of the labelled roles.
_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\s*[AaPp]\.?[Mm]\.?)?"
_STAMP = rf"(?:[\[(]\s*(?:\d{{1,4}}[-/.]\d{{1,2}}[-/.]\d{{1,4}},?\s*)?{_TIME}\s*[\])]|{_TIME})"
AGENT_ROLES = ("agent|support|swiftparcel|bot|assistant|rep|representative|staff|operator|advisor|adviser|executive|"
               "associate|முகவர்|ஏஜென்ட்|ஏஜெண்ட்|एजेंट|सहायक|ഏജന്റ്|ഏജൻറ്|এজেন্ট|ወኪል|ሰራተኛ")
CUSTOMER_ROLES = ("customer|client|user|me|caller|sender|recipient|receiver|visitor|guest|shopper|"
                  "வாடிக்கையாளர்|கஸ்டமர்|ग्राहक|कस्टमर|ഉപഭോക്താവ്|കസ്റ്റമർ|গ্রাহক|কাস্টমার|ደንበኛ")
_NAME = r"[\p{L}\p{M}][\p{L}\p{M}.'’]*(?:\s[\p{L}\p{M}][\p{L}\p{M}.'’]*)?"
SPEAKER = regex.compile(
    rf"(?i)^[ \t>*]*(?:{_STAMP}\s*)?"
    rf"(?:(?P<role>{AGENT_ROLES}|{CUSTOMER_ROLES})(?![\p{{L}}\p{{M}}])(?:\s*[-–—]\s*{_NAME}|\s+{_NAME}(?=\s*(?:{_STAMP}\s*)?[:：])"
    rf"|\s*\({_NAME}\))?\s*(?:{_STAMP})?|(?P<name>{_NAME})\s*{_STAMP})"
    r"\s*[:：]\s*")
_AGENT = regex.compile(rf"(?i)^(?:{AGENT_ROLES})$")


def speaker_turns(text: str) -> list[tuple[str, str]] | None:
    """(role, text) per turn of a pasted chat log, role "customer" or "agent"; None for a plain ticket.

    Lines without a label continue the turn above them (a message over several lines); lines above the
    first label (a subject, a note) count as the customer's."""
    turns: list[list[str]] = []
    labelled = False
    for line in text.splitlines():
        m = SPEAKER.match(line)
        if m:
            labelled = True
            role = m.group("role")
            who = ("agent" if _AGENT.match(role) else "customer") if role else "other"
            turns.append([who, line[m.end():]])
        elif turns:
            turns[-1][1] += "\n" + line
        else:
            turns.append(["customer", line])
    if not labelled:
        return None
    named = {t[0] for t in turns if t[0] != "other"}
    other = "agent" if "customer" in named else "customer"  # bare names: the side not labelled by role
    return [(other if who == "other" else who, body.strip()) for who, body in turns if body.strip()]


def customer_text(text: str) -> str:
    """The customer's words: a chat log's customer turns without their labels, or a plain ticket as is."""
    turns = speaker_turns(text)
    if turns is None:
        return text
    return "\n".join(body for who, body in turns if who == "customer")


def _is_reference(sentence: str) -> bool:
    """A sentence that only quotes an identifier ("My tracking number is 123456789012."): the number is in
    the entities already, and embedded with a few words it matches the tracking articles whatever the
    ticket is about."""
    rest = sentence
    for _kind, rx in TRACKING:
        rest = rx.sub(" ", rest)
    return rest != sentence and len(rest.split()) <= REFERENCE_WORDS and not QUESTION_WORDS.search(rest)


def question_groups(text: str, max_groups: int = 4) -> list[str]:
    """Sentences that carry the question, in groups of neighbours.

    A group is searched on its own, so it must say what it is about: a short sentence ("What should I do
    about this?", "இதற்கு என்ன செய்வது?") joins the group before it instead of opening one, and a sentence
    that only quotes a tracking number is left out (unless nothing else is left)."""
    sentences = [s.strip() for s in SENTENCE_SPLIT.split(text) if len(s.strip()) > 2]
    scored, references = [], []
    for i, s in enumerate(sentences):
        if GREETING.match(s) and len(s.split()) < 6:
            continue
        if _is_reference(s):
            references.append((0, i, s))
            continue
        score = len(QUESTION_WORDS.findall(s)) + len(PROBLEM_WORDS.findall(s)) + (1 if len(s.split()) > 4 else 0)
        scored.append((score, i, s))
    scored = scored or references
    if not scored:
        return [text[:1000]] if text.strip() else []
    best = sorted(scored, key=lambda x: (-x[0], x[1]))[: max_groups * 2]
    best.sort(key=lambda x: x[1])
    groups: list[str] = []
    for _score, _i, s in best:
        if groups and len(groups[-1]) + len(s) < 400 and (
                len(groups) >= max_groups or len(groups[-1].split()) < 12 or len(s.split()) < CONTEXT_WORDS):
            groups[-1] += " " + s
        else:
            groups.append(s)
    return groups[:max_groups]


def _country_bonus(article_countries: list[str], named: list[str] | None) -> float:
    """For a ticket naming countries: +COUNTRY_BONUS for an article written for one of them, -COUNTRY_BONUS
    for one written only for others (a guide to Ethiopia does not answer a ticket about Dubai); else 0."""
    if not named or "*" in article_countries or not article_countries:
        return 0.0
    return COUNTRY_BONUS if set(article_countries) & set(named) else -COUNTRY_BONUS


def assist(searcher: Searcher, text: str, lang: str | None = None, limit: int = 5,
           audience: str = "internal") -> dict:
    """Entities + merged suggestions for a ticket (``text`` already capped at MAX_CHARS by the caller)."""
    text = customer_text(text[:MAX_CHARS])  # a chat log: the customer's turns, what they said is the question
    entities = extract_entities(text)
    guess = searcher.detect(text)
    groups = question_groups(text)
    fused: dict[str, float] = {}
    cards: dict[str, dict] = {}
    countries = [c for c in entities["countries"] if c != "EU"] or None
    # The kind of problem the ticket names, searched in English words as one more group: the model reads a
    # colloquial description of it in Tamil or Amharic ("பெட்டி கிழிந்து இருந்தது, மிக்ஸி ஜார் உடைந்துவிட்டது")
    # less surely than the words of the problem itself, and the articles for it exist in English.
    kinds = [query for rx, query in PROBLEM_KINDS.values() if rx.search(text)] if groups else []
    for g in groups + kinds:
        own = g in groups
        res = searcher.search(g, Filters(audience=audience), limit=8, guess=guess if own else None)
        for rank, r in enumerate(res["results"]):
            key = r["group"]
            fused[key] = fused.get(key, 0.0) + 1.0 / (60 + rank + 1)
            # the English problem query only votes: the card shown stays the ticket's language version
            if key not in cards or (own and r["dense_score"] > cards[key]["dense_score"]):
                cards[key] = r
    # a ticket naming a country: its country guide is a good extra suggestion, never ahead of the answer to
    # the question (the bonus is worth several ranks, so it must not decide the first place); other
    # countries' guides move down
    first = [max(fused, key=lambda k: fused[k])] if fused else []
    boosted = {k: v + _country_bonus(cards[k]["countries"], countries) for k, v in fused.items()}
    ranked = (first + sorted((k for k in boosted if k not in first), key=lambda k: -boosted[k]))[:limit]
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

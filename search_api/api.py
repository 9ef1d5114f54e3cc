"""The JSON API, /api/v1. Requests are validated against openapi.yaml before a view runs."""

from __future__ import annotations

import re
import time
from functools import cache, wraps
from pathlib import Path

import yaml
from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from kb.analytics import StoreUnavailable, search_event_fields
from kb.articles import ISO639_1
from kb.assist import MAX_CHARS, assist
from kb.pg import Unavailable
from kb.search import Filters
from kb.service import article_view

from .errors import APIError

bp = Blueprint("api", __name__)
SPEC_PATH = Path(__file__).with_name("openapi.yaml")
ROLE_RANK = {"public": 0, "agent": 1, "admin": 2}


def _limit_key() -> str:
    return f"key:{g.key_id}" if getattr(g, "key_id", None) else f"ip:{get_remote_address()}"


limiter = Limiter(key_func=_limit_key, default_limits=[], storage_uri="memory://",
                  headers_enabled=True, strategy="moving-window")


def _rate() -> str:
    return current_app.config["RATE_LIMIT"]


@cache
def spec_dict() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@cache
def _openapi():
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(spec_dict())


def warm_validation() -> None:
    """Parse the OpenAPI document and build openapi-core's validator (~0.5 s, once per process) when the app is
    created, so a worker's first request does not wait for them."""
    import openapi_core.contrib.flask  # noqa: F401  (the request wrapper validate_request imports)

    spec_dict()
    _openapi()


def _bad_key_limit():
    """(limit, identifiers) of invalid-key attempts per client address: BAD_KEY_LIMIT, e.g. "20/minute"."""
    from limits import parse

    return parse(current_app.config["BAD_KEY_LIMIT"]), ("bad-key", current_app.name, str(id(current_app)),
                                                       get_remote_address())


def _too_many_bad_keys(item, ident) -> APIError:
    stats = limiter.limiter.get_window_stats(item, *ident)
    retry = max(1, int(stats.reset_time - time.time()) + 1)
    return APIError(429, "rate_limited", f"too many invalid API keys from this address: limit is {item}; "
                    f"retry in {retry} s", "X-API-Key", headers={"Retry-After": str(retry)})


def caller_role() -> tuple[str, str | None]:
    """Role from X-API-Key (or Authorization: Bearer). A key that is sent but invalid is a 401; after
    BAD_KEY_LIMIT of them from one address every key from it is a 429 until the window passes (a guess
    that happens to be right is refused too, so keys cannot be brute-forced)."""
    key = request.headers.get("X-API-Key") or ""
    auth = request.headers.get("Authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if not key:
        return "public", None
    item, ident = _bad_key_limit()
    if not limiter.limiter.test(item, *ident):
        raise _too_many_bad_keys(item, ident)
    found = current_app.extensions["kb_keys"].verify(key)
    if not found:
        if not limiter.limiter.hit(item, *ident):
            raise _too_many_bad_keys(item, ident)
        raise APIError(401, "unauthorized", "invalid or revoked API key", "X-API-Key")
    return found[1], found[0]


def require(role: str):
    def deco(view):
        @wraps(view)
        def wrapper(*a, **kw):
            if g.role == "public":
                raise APIError(401, "unauthorized", f"an {role} API key is required (header X-API-Key)", "X-API-Key")
            if ROLE_RANK[g.role] < ROLE_RANK[role]:
                raise APIError(403, "forbidden", f"this endpoint needs an {role} key", "X-API-Key")
            return view(*a, **kw)

        return wrapper

    return deco


def _field_of(err) -> str | None:
    """Best field name for an openapi-core validation error."""
    name = getattr(err, "name", None)
    if name:
        return name
    cause = err.__cause__ or err
    for sub in getattr(cause, "schema_errors", []) or []:
        path = [str(p) for p in sub.path]
        if sub.validator == "required":
            missing = sub.message.split("'")
            return ".".join(path + [missing[1]]) if len(missing) > 1 else ".".join(path) or None
        if sub.validator == "additionalProperties":
            extra = sub.message.split("'")
            return extra[1] if len(extra) > 1 else None
        return ".".join(path) or None
    return None


READABLE = {
    "maxLength": "is longer than {} characters", "minLength": "is shorter than {} characters",
    "maximum": "must be at most {}", "minimum": "must be at least {}", "pattern": "does not match {}",
    "enum": "must be one of {}", "type": "must be of type {}", "maxItems": "has more than {} items",
    "format": "must be a {}",
}


def _sub_message(sub, name: str | None) -> str:
    """One jsonschema error as a sentence naming the field (never the validator's own repr of a value)."""
    where = ".".join(str(p) for p in sub.path) or name or "value"
    if sub.validator == "required":
        missing = sub.message.split("'")
        field = ".".join([str(p) for p in sub.path] + [missing[1]]) if len(missing) > 1 else where
        return f"{field} is required"
    if sub.validator == "additionalProperties":
        extra = sub.message.split("'")
        return f"unknown field '{extra[1]}'" if len(extra) > 1 else "unknown fields"
    template = READABLE.get(sub.validator)
    if template:
        value = sub.validator_value
        if sub.validator == "enum":
            value = ", ".join(map(str, value))
        return f"{where} {template.format(value)}"
    return f"{where} is not valid"


def _message_of(err) -> str:
    """A readable message for an openapi-core error: the field and what is wrong, no Python internals
    (casting errors carry e.g. "invalid literal for int() with base 10")."""
    from openapi_core.casting.schemas.exceptions import CastError
    from openapi_core.deserializing.styles.exceptions import EmptyQueryParameterValue
    from openapi_core.validation.request.exceptions import MissingParameterError

    name = getattr(err, "name", None)
    cause = err.__cause__
    if isinstance(err, MissingParameterError):
        return f"{name} is required"
    if isinstance(cause, CastError):
        kind = {"integer": "an integer", "number": "a number", "boolean": "true or false"}.get(cause.type, cause.type)
        shown = str(cause.value)
        return f"{name} must be {kind}, not {shown[:40]!r}"
    if isinstance(cause, EmptyQueryParameterValue):
        return f"{name} must not be empty"
    subs = getattr(cause or err, "schema_errors", None)
    if subs:
        return "; ".join(_sub_message(sub, name) for sub in subs)[:300]
    return f"{name} is not valid" if name else "the request does not match the API description"


MAX_JSON_DEPTH = 32
MAX_SESSION_CHARS = 200
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_json(body) -> None:
    """Reject what parses but cannot be handled: deep nesting, and lone surrogates (``"\\ud800"``), which are
    not Unicode and fail later when stored or encoded as UTF-8."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, "bad_request", f"body is nested deeper than {MAX_JSON_DEPTH} levels", "body")
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise APIError(400, "bad_request", "body contains an unpaired UTF-16 surrogate escape", "body")
        elif isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _session() -> str | None:
    """The X-KB-Session header (analytics only), bounded like every other id the store keeps."""
    session = request.headers.get("X-KB-Session") or None
    if session and len(session) > MAX_SESSION_CHARS:
        raise APIError(400, "bad_request", f"X-KB-Session is longer than {MAX_SESSION_CHARS} characters",
                       "X-KB-Session")
    return session


def _spec_path(rule: str) -> str:
    """Flask rule -> OpenAPI path: ``/api/v1/articles/<article_id>`` -> ``/api/v1/articles/{article_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation_params(rule: str, method: str) -> list[dict] | None:
    """The parameters the OpenAPI document declares for an operation, $refs resolved (None: not in the document)."""
    item = spec_dict()["paths"].get(_spec_path(rule))
    if not item or method.lower() not in item:
        return None
    params = item.get("parameters", []) + item[method.lower()].get("parameters", [])
    return [spec_dict()["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
            for p in params]


@cache
def _query_params(rule: str, method: str) -> frozenset[str] | None:
    """Query parameter names the OpenAPI document declares for an operation (None: not in the document)."""
    params = _operation_params(rule, method)
    return None if params is None else frozenset(p["name"] for p in params if p.get("in") == "query")


_INTEGER = re.compile(r"-?[0-9]{1,15}")


@cache
def _plain_checks(rule: str, method: str) -> tuple | None:
    """(name, where, required, type, validator) per parameter of a body-less operation whose parameters are all
    in the query or the path with a string or integer schema; None for any other operation."""
    from jsonschema import Draft202012Validator

    params = _operation_params(rule, method)
    if params is None or any(p.get("in") not in ("query", "path") or
                             p.get("schema", {}).get("type") not in ("string", "integer") for p in params):
        return None
    return tuple((p["name"], p["in"], bool(p.get("required")), p["schema"]["type"],
                  Draft202012Validator(p["schema"])) for p in params)


def _plainly_valid() -> bool:
    """True when a GET request's parameters are plainly valid: every required one present, integers written as
    plain digits, each value valid against its schema. openapi-core's validation was ~12% of an uncached search
    (benchmarks/profile_search.py); a request that is not plainly valid still goes through it, so every error
    message is openapi-core's, and this accepts nothing openapi-core refuses (tests/test_api.py checks both on
    the same requests)."""
    if request.method != "GET" or not request.url_rule:
        return False
    checks = _plain_checks(request.url_rule.rule, request.method)
    if checks is None:
        return False
    for name, where, required, kind, validator in checks:
        value = request.args.get(name) if where == "query" else (request.view_args or {}).get(name)
        if value is None:
            if required:
                return False
            continue
        if kind == "integer":
            if not _INTEGER.fullmatch(value):
                return False
            value = int(value)
        if not validator.is_valid(value):
            return False
    return True


def _check_query_names() -> None:
    """An unknown or repeated query parameter is a 400 naming it: a typo (``?langs=ta``) must not silently
    widen a search, and ``?limit=1&limit=50`` has no single meaning."""
    declared = _query_params(request.url_rule.rule, request.method) if request.url_rule else None
    if declared is None:
        return
    for name in request.args:
        shown = name[:60]
        if name not in declared:
            takes = f"one of: {', '.join(sorted(declared))}" if declared else "none"
            raise APIError(400, "bad_request", f"unknown parameter '{shown}' (this endpoint takes {takes})", shown)
        if len(request.args.getlist(name)) > 1:
            raise APIError(400, "bad_request", f"parameter '{shown}' is given more than once", shown)


def validate_request() -> None:
    """Check the request against the OpenAPI document; map failures to 400/415/422 with the field."""
    if request.method == "POST":
        ctype = (request.mimetype or "").lower()
        if ctype != "application/json":
            raise APIError(415, "unsupported_media_type", "send the body as application/json", "Content-Type")
        if request.content_length and request.content_length > current_app.config["MAX_BODY_BYTES"]:
            raise APIError(413, "payload_too_large", "request body too large")
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # the JSON parser's own limit; not a ValueError, so `silent` does not catch it
            raise APIError(400, "bad_request", f"body is nested deeper than {MAX_JSON_DEPTH} levels", "body") from None
        if body is None:
            raise APIError(400, "bad_request", "body is not valid JSON", "body")
        _check_json(body)
    _check_query_names()
    if _plainly_valid():
        return
    from openapi_core.contrib.flask import FlaskOpenAPIRequest
    from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
    from openapi_core.validation.request.exceptions import (
        MissingRequestBody,
        ParameterValidationError,
        RequestBodyValidationError,
        SecurityValidationError,
    )

    for err in _openapi().iter_request_errors(FlaskOpenAPIRequest(request)):
        if isinstance(err, SecurityValidationError):
            continue
        if isinstance(err, MediaTypeNotFound):
            raise APIError(415, "unsupported_media_type", "send the body as application/json", "Content-Type")
        if isinstance(err, MissingRequestBody):
            raise APIError(400, "bad_request", "a JSON body is required", "body")
        if isinstance(err, ParameterValidationError):
            raise APIError(400, "bad_request", f"invalid parameter: {_message_of(err)}", _field_of(err))
        if isinstance(err, RequestBodyValidationError):
            raise APIError(422, "unprocessable", _message_of(err), _field_of(err))
        raise APIError(400, "bad_request", _message_of(err), _field_of(err))


def validated(view):
    @wraps(view)
    def wrapper(*a, **kw):
        validate_request()
        return view(*a, **kw)

    return wrapper


def _service():
    return current_app.extensions["kb_service"]


def _store():
    return current_app.extensions["kb_analytics"]


def _searcher():
    from kb.index import BundleError

    try:
        return _service().searcher
    except BundleError as e:
        raise APIError(503, "unavailable", f"index not loaded: {e}") from None


def _audience() -> str:
    return "internal" if g.role in ("agent", "admin") else "public"


def _channel() -> str:
    """Who is calling, for analytics: the help-center pages say ``X-KB-Channel: selfservice``, the agent
    sidebar ``agent`` (only with an agent or admin key); anything else is an integration (``api``), keyed or
    not, so one integrator's burst never lands in the self-service or agent figures."""
    asked = request.headers.get("X-KB-Channel")
    if asked == "agent" and g.role in ("agent", "admin"):
        return "agent"
    return "selfservice" if asked == "selfservice" else "api"


def _caller() -> dict:
    """The analytics fields every event carries: channel, API key id (never the secret), session."""
    return {"channel": _channel(), "key_id": g.key_id, "session_id": _session()}


# ---------------------------------------------------------------------------- filter values


def _check_lang(searcher, lang: str | None) -> None:
    """``lang`` must be a language the loaded knowledge base has articles in (a filter on any other
    would only ever return nothing)."""
    if lang is None:
        return
    langs = sorted({a["lang"] for a in searcher.articles})
    if lang not in langs:
        raise APIError(400, "bad_request",
                       f"lang '{lang}' is not a language of this knowledge base (one of: {', '.join(langs)})", "lang")


def _check_country(country: str | None) -> None:
    """``country``: an ISO 3166-1 alpha-2 code, ``EU`` or ``*`` (articles for every country match any code)."""
    from kb.articles import ISO3166

    if country is not None and country != "*" and country not in ISO3166:
        raise APIError(400, "bad_request", f"country '{country}' is not an ISO 3166-1 alpha-2 code (or EU, *)",
                       "country")


# ---------------------------------------------------------------------------- search


@bp.get("/api/v1/search")
@limiter.limit(_rate)
@validated
def search():
    args = request.args
    q = args.get("q", "").strip()
    if not q:
        raise APIError(400, "bad_request", "q must not be blank", "q")
    if len(q) > current_app.config["MAX_QUERY_CHARS"]:
        raise APIError(400, "bad_request", f"q is longer than {current_app.config['MAX_QUERY_CHARS']} characters", "q")
    limit = int(args.get("limit", 10))
    offset = int(args.get("offset", 0))
    if limit > current_app.config["MAX_LIMIT"]:
        raise APIError(400, "bad_request", f"limit must be at most {current_app.config['MAX_LIMIT']}", "limit")
    session = _session()
    searcher = _searcher()  # one reference for the whole request: a swap cannot mix bundles
    _check_lang(searcher, args.get("lang"))
    _check_country(args.get("country"))
    f = Filters(lang=args.get("lang"), topics=[args["topic"]] if args.get("topic") else None,
                countries=[args["country"]] if args.get("country") else None, audience=_audience())
    t0 = time.perf_counter()
    res = searcher.search(q, f, limit=limit, offset=offset, floor=True)  # only cards above the relevance floor
    latency = (time.perf_counter() - t0) * 1000
    try:
        search_id = _store().record_search(
            q, **{**_caller(), "session_id": session},
            filters={k: v for k, v in {"lang": f.lang, "topic": args.get("topic"), "country": args.get("country")}.items() if v},
            **{**search_event_fields(res), "latency_ms": latency},
        )
    except (Unavailable, StoreUnavailable) as e:  # the answer matters more than its log line: serve it unlogged
        current_app.logger.warning("search not logged: %s", e)
        search_id = None
    return jsonify({"search_id": search_id, **res})


@bp.post("/api/v1/assist")
@limiter.limit(_rate)
@require("agent")
@validated
def assist_view():
    body = request.get_json()
    parts = [body.get("text", "")] + [m["text"] for m in body.get("messages", []) if m["role"] == "customer"]
    text = "\n".join(p for p in parts if p).strip()
    if not text:
        raise APIError(422, "unprocessable", "send text or at least one customer message", "text")
    if len(text) > MAX_CHARS:
        raise APIError(422, "unprocessable", f"ticket text is longer than {MAX_CHARS} characters", "text")
    lang = body.get("lang")
    if lang is not None and lang not in ISO639_1:
        raise APIError(422, "unprocessable", f"lang '{lang}' is not an ISO 639-1 language code", "lang")
    res = assist(_searcher(), text, lang=lang, limit=int(body.get("limit", 5)))
    assist_id = _store().record_assist(text=text, entities=res["entities"],
                                       suggestions=[s["article_id"] for s in res["suggestions"]])
    return jsonify({"assist_id": assist_id, **res})


# ---------------------------------------------------------------------------- articles


@bp.get("/api/v1/articles/<article_id>")
@limiter.limit(_rate)
@validated
def article(article_id: str):
    searcher = _searcher()
    _check_lang(searcher, request.args.get("lang"))
    view = article_view(searcher, article_id, request.args.get("lang"), _audience())
    if view is None:
        raise APIError(404, "not_found", f"no article '{article_id}'", "article_id")
    return jsonify(view)


DIRECT = "direct"  # feedback on an article page opened without a search (see pages.article)


def _known_search(search_id: str | None, feedback: bool = False) -> None:
    """Events must cite something this service issued: a search_id from GET /search; for feedback also
    an assist_id from POST /assist (agents rate suggestions) or "direct" (no search led to the article)."""
    if search_id is None or _store().has_search(search_id):
        return
    if feedback and (search_id == DIRECT or _store().has_assist(search_id)):
        return
    raise APIError(422, "unprocessable", "no search with this search_id: send the search_id that "
                   "GET /api/v1/search returned" + (' (or an assist_id, or "direct")' if feedback else ""),
                   "search_id")


def _visible_article(article_id: str) -> None:
    searcher = _searcher()
    ok = any(a["id"] == article_id and (_audience() != "public" or a["audience"] == "public") for a in searcher.articles)
    if not ok:
        raise APIError(422, "unprocessable", f"no article '{article_id}'", "article_id")


# ---------------------------------------------------------------------------- events


@bp.post("/api/v1/feedback")
@limiter.limit(_rate)
@validated
def feedback():
    body = request.get_json()
    _known_search(body["search_id"], feedback=True)
    _visible_article(body["article_id"])
    fid = _store().record_feedback(search_id=body["search_id"], article_id=body["article_id"],
                                   helpful=bool(body["helpful"]), comment=body.get("comment"), **_caller())
    return jsonify({"id": fid, "stored": True}), 201


@bp.post("/api/v1/events/click")
@limiter.limit(_rate)
@validated
def click():
    body = request.get_json()
    _known_search(body["search_id"])
    _visible_article(body["article_id"])
    cid = _store().record_click(search_id=body["search_id"], article_id=body["article_id"], rank=int(body["rank"]),
                                **_caller())
    return jsonify({"id": cid, "stored": True}), 201


@bp.post("/api/v1/events/contact")
@limiter.limit(_rate)
@validated
def contact():
    body = request.get_json()
    _known_search(body.get("search_id") or None)
    cid = _store().record_contact(search_id=body.get("search_id"), **_caller())
    return jsonify({"id": cid, "stored": True}), 201


# ---------------------------------------------------------------------------- admin


@bp.get("/api/v1/analytics/<report>")
@require("admin")
@validated
def analytics(report: str):
    from kb.analytics import run_report

    args = request.args
    try:
        rows = run_report(_store(), report, since=args.get("since"), until=args.get("until"), lang=args.get("lang"),
                          embed=_service().encoder.encode_queries, channel=args.get("channel"), key=args.get("key"))
    except ValueError as e:
        word = str(e).split(" ", 1)[0]
        field = word if word in ("channel", "key") else "until" if "until" in str(e) else "since"
        raise APIError(400, "bad_request", str(e), field) from None
    if args.get("format") == "csv":
        from kb.analytics import report_rows, to_csv

        return Response(to_csv(report_rows(report, rows)), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{report}.csv"'})
    return jsonify({"report": report, "data": rows})


@bp.post("/api/v1/admin/reload")
@require("admin")
def reload():
    service = _service()
    before = service.searcher.bundle.name if service.ready else None
    service.reload_async()
    return jsonify({"status": "reloading", "serving": before}), 202


# ---------------------------------------------------------------------------- health


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    service = _service()
    if not service.ready:
        raise APIError(503, "unavailable", f"index not loaded: {service.last_error or 'loading'}")
    s = service.searcher
    out = {"status": "ready", "bundle": s.bundle.name, "articles": sum(
        1 for a in s.articles if _audience() != "public" or a["audience"] == "public"), "model": s.encoder.model_id}
    stats = getattr(service.encoder, "stats", None)
    if g.role != "public" and stats is not None:  # operators' figure; the public probe says only "ready"
        out["query_cache"] = stats()
    return jsonify(out)


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec_dict())

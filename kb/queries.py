"""The labelled query set: per-language files in tests/data/queries/ merged into tests/data/queries.jsonl.

`relevant` holds the query authors' labels. `pooled` adds the judgements of tests/data/judgements.jsonl:
(query, article) pairs from the top results of the dense, lexical and hybrid legs that the authors had not
labelled, graded 0-2 by assessors who saw neither the labels nor the ranks (TREC-style pooling, 2,489
pairs); grade >= 1 counts as relevant. `kb eval` uses both unless `--labels authors`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "tests" / "data" / "queries"
JUDGEMENTS = ROOT / "tests" / "data" / "judgements.jsonl"
MERGED = ROOT / "tests" / "data" / "queries.jsonl"


def _read_jsonl(path: Path) -> list[dict] | None:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            print(f"{path}:{n}: not JSON: {e}", file=sys.stderr)
            return None
    return rows


def merge(parts: Path = PARTS, out: Path = MERGED, judgements: Path = JUDGEMENTS) -> int:
    rows: list[dict] = []
    for path in sorted(parts.glob("*.jsonl")):
        part = _read_jsonl(path)
        if part is None:
            return 1
        rows.extend(part)
    pooled: dict[str, dict[str, int]] = {}
    if judgements.is_file():
        judged = _read_jsonl(judgements)
        if judged is None:
            return 1
        for j in judged:
            if j["grade"] >= 1:
                pooled.setdefault(j["query_id"], {})[j["article"]] = j["grade"]
    for r in rows:
        extra = {a: g for a, g in pooled.get(r["id"], {}).items() if a not in r["relevant"]}
        if r["relevant"] and extra:  # a no-answer query stays one: it was written to have no answer
            r["pooled"] = extra
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} queries, {sum(len(r.get('pooled', {})) for r in rows)} pooled judgements")
    return 0


if __name__ == "__main__":
    sys.exit(merge() if sys.argv[1:] == ["merge"] else 2)

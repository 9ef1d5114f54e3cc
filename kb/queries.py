"""The labelled query set: per-language files in tests/data/queries/ merged into tests/data/queries.jsonl."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "tests" / "data" / "queries"
MERGED = ROOT / "tests" / "data" / "queries.jsonl"


def merge(parts: Path = PARTS, out: Path = MERGED) -> int:
    rows = []
    for path in sorted(parts.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                print(f"{path}:{n}: not JSON: {e}", file=sys.stderr)
                return 1
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(merge() if sys.argv[1:] == ["merge"] else 2)

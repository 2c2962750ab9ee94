"""Write ops/grafana/dashboards/*.json from stream_app.dashboards (dashboards as code).

    python scripts/build_dashboards.py          # rewrite the JSON files
    python scripts/build_dashboards.py --check  # exit 1 if they differ from the code

tests/unit/ops/test_dashboards.py runs the check, so the committed JSON never drifts from
the code that generates it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream_app.dashboards import build_dashboards, dumps_dashboard  # noqa: E402

OUT = ROOT / "ops" / "grafana" / "dashboards"


def stale_files(out: Path = OUT) -> list[str]:
    """Names of the dashboard files that are missing, differ from the code, or are extra."""
    boards = build_dashboards()
    stale = [
        name
        for name, board in boards.items()
        if not (out / name).is_file()
        or (out / name).read_text(encoding="utf-8") != dumps_dashboard(board)
    ]
    stale += sorted(p.name for p in out.glob("*.json") if p.name not in boards)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(f"out of date in {args.out}: {', '.join(stale)}; run scripts/build_dashboards.py")
            return 1
        print(f"{args.out}: up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, board in build_dashboards().items():
        (args.out / name).write_text(dumps_dashboard(board), encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

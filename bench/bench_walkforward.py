"""Wall time of the full 2007-2023 walk-forward of all baselines, 10 assets.

Runs `riskmon backtest`'s engine path (no report) on ../shared/data/daily with
equal weights, each model in its own process (--jobs, default 2), and prints
each model's own walk-forward time and its ratio to historical simulation
(the baseline, measured in the same run), plus the total wall time.

    python bench/bench_walkforward.py [--jobs 2] [--models baselines]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import shared_daily

from models.registry import parse_model_names
from producers.history import load_history
from stream_app.backtest_cmd import BacktestPlan, run_models, score_result
from stream_app.portfolio import equal_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", default="baselines")
    ap.add_argument("--start", default="2007-01-01")
    ap.add_argument("--end", default="2023-12-31")
    args = ap.parse_args()
    panel = load_history(str(shared_daily()))
    names = parse_model_names(args.models)
    if "hs" not in names:
        names.insert(0, "hs")
    plan = BacktestPlan(
        panel,
        equal_weights(list(panel.assets)),
        tuple(names),
        np.datetime64(args.start),
        np.datetime64(args.end),
    )
    t0 = time.perf_counter()
    results = run_models(plan, jobs=args.jobs, show_progress=False)
    wall = time.perf_counter() - t0
    per_model = {r.model: float(r.update_seconds.sum()) for r in results}
    base = per_model["hs"]
    n_days = int(results[0].dates.size)
    print(f"walk-forward {args.start}..{args.end}: {n_days} scored days, {panel.n_assets} assets")
    print(f"{'model':<16}{'seconds':>10}{'ms/day':>10}{'x hs':>8}{'exc99':>8}")
    for r in results:
        s = score_result(r)
        sec = per_model[r.model]
        print(
            f"{r.model:<16}{sec:>10.2f}{1e3 * sec / r.update_seconds.size:>10.3f}"
            f"{sec / base:>8.1f}{s.exceptions[0.99]:>8}"
        )
    print(f"total wall time with --jobs {args.jobs}: {wall:.1f} s")


if __name__ == "__main__":
    main()

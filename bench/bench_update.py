"""Cost of one daily update (predict + update) per model, 10 assets.

Feeds each model the real 10-asset history (../shared/data/daily) up to a
point past its warm-up, then times ``predict()`` + ``update()`` over the next
N days. Refits (GARCH models every 21 days) fall inside the timed days, so the
mean includes their amortised cost; p50 shows the cost between refits.
The baseline is plain historical simulation (``hs``) timed in the same run.

    python bench/bench_update.py [--days 250] [--models all]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import shared_daily

from models.registry import make_model, parse_model_names
from producers.history import load_history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--models", default="baselines")
    args = ap.parse_args()
    panel = load_history(str(shared_daily()))
    r = panel.log_returns()
    w = np.full(panel.n_assets, 1.0 / panel.n_assets)
    names = parse_model_names(args.models)
    if "hs" not in names:
        names.insert(0, "hs")
    print(f"{panel.n_assets} assets, warm-up {args.warmup} days, timed {args.days} days")
    print(f"{'model':<16}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'x hs':>8}")
    base = None
    for name in names:
        model = make_model(name, w, seed=1)
        for row in r[: args.warmup]:
            model.update(row)
        times = np.empty(args.days)
        for i, row in enumerate(r[args.warmup : args.warmup + args.days]):
            t0 = time.perf_counter()
            model.predict()
            model.update(row)
            times[i] = time.perf_counter() - t0
        ms = 1e3 * times
        mean = ms.mean()
        base = mean if name == "hs" else base
        print(
            f"{name:<16}{mean:>10.3f}{np.median(ms):>10.3f}{np.percentile(ms, 99):>10.3f}"
            f"{ms.max():>10.2f}{mean / base:>8.1f}"
        )


if __name__ == "__main__":
    main()

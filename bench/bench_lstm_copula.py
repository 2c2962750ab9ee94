"""Cost of one daily risk update (LSTM-Copula + 20,000-scenario MC + CNN) on one core.

``risk day`` is the issue's target (<= 10 ms for 10 assets, <= 100 ms for
100): the LSTM-Copula update and forecast, the Euler contributions from the
same scenarios and the heatmap CNN's update and forecast (:class:`RiskDay`).
``lstm_copula`` is ``predict()`` + ``update()`` alone, split into its two
halves below it (the Monte Carlo runs once per day: ``update`` reuses the
evening's scenarios for the portfolio PIT).

Times ``predict()`` + ``update()`` per day for 10 assets (the real panel in
../shared/data/daily) and for 100 assets (simulated Student-t returns: the
cost does not depend on the numbers), with the shipped artifact. The baseline,
timed in the same run on the same days, is a plain Gaussian-copula Monte Carlo
with EWMA-volatility normal marginals and the same number of antithetic
scenarios. Numbers are best-of-``--repeat`` means (the machine is shared).

    python bench/bench_lstm_copula.py [--days 250] [--scenarios 20000] [--train]

``--train`` also times training the marginals on 15 years x 10 assets of the
real panel (2008-2022) with ``--threads`` torch threads (default 1: on a
shared, oversubscribed machine two spinning OpenMP threads ran a training step
15 times slower than one).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import shared_daily  # noqa: E402

from models.lstm_copula import LstmCopula  # noqa: E402
from models.measures import var_es_from_samples  # noqa: E402
from stream_app.heap import keep_heap  # noqa: E402
from stream_app.train_cnn import DefaultCnnVaR  # noqa: E402
from stream_app.train_lstm_copula import fit_artifact, load  # noqa: E402


class GaussianCopulaMC:
    """Baseline: EWMA vol (lambda 0.94) normal marginals, EWMA correlation, Gaussian MC."""

    def __init__(self, weights: np.ndarray, n_scenarios: int, seed: int = 0) -> None:
        self.w = weights
        self.n = n_scenarios
        self.seed = seed
        d = weights.size
        self.var = np.full(d, 1e-4)
        self.cov = np.eye(d) * 1e-4
        self.t = 0

    def update(self, r: np.ndarray) -> None:
        self.var = 0.94 * self.var + 0.06 * r * r
        self.cov = 0.97 * self.cov + 0.03 * np.outer(r, r)
        self.t += 1

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.t])
        s = np.sqrt(np.diag(self.cov))
        corr = self.cov / np.outer(s, s) + 1e-9 * np.eye(self.w.size)
        chol = np.linalg.cholesky(corr)
        z = rng.standard_normal(((self.n + 1) // 2, self.w.size)) @ chol.T
        z = np.concatenate([z, -z])[: self.n] * np.sqrt(self.var)
        return var_es_from_samples(np.expm1(z) @ self.w)


def time_days(model, days: np.ndarray) -> np.ndarray:
    out = np.empty(days.shape[0])
    for i, row in enumerate(days):
        t0 = time.perf_counter()
        model.predict()
        model.update(row)
        out[i] = time.perf_counter() - t0
    return out


class RiskDay:
    """The stream's daily risk update for one portfolio: what the issue's cost target covers.

    ``update(day's returns)`` advances the LSTM-Copula (LSTM step, copula
    update, the portfolio PIT of yesterday's forecast) and the heatmap CNN;
    ``predict()`` draws the 20,000-scenario Monte Carlo (VaR/ES), the Euler
    contributions from the same scenarios, and the CNN's volatility forecast
    and VaR, as ``stream_app.risk`` does when a day closes.
    """

    def __init__(self, weights: np.ndarray, lstm_artifact, n_scenarios: int) -> None:
        self.lc = LstmCopula(weights, lstm_artifact, n_scenarios=n_scenarios, seed=1)
        self.cnn = DefaultCnnVaR(weights)

    def update(self, r: np.ndarray) -> None:
        self.lc.update(r)
        self.cnn.update(r)

    def predict(self) -> None:
        self.lc.predict()
        self.lc.contributions()
        self.cnn.predict()


def bench(label: str, r: np.ndarray, warmup: int, days: int, n_sc: int, repeat: int) -> None:
    d = r.shape[1]
    w = np.full(d, 1.0 / d)
    art = load()
    best: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        lc = LstmCopula(w, art, n_scenarios=n_sc, seed=1)
        base = GaussianCopulaMC(w, n_sc, seed=1)
        day = RiskDay(w, art, n_sc)
        for row in r[:warmup]:
            lc.update(row)
            base.update(row)
            day.update(row)
        for name, model in (("lstm_copula", lc), ("gauss_mc", base), ("risk day", day)):
            ms = 1e3 * time_days(model, r[warmup : warmup + days])
            if name not in best or ms.mean() < best[name].mean():
                best[name] = ms
        # split of one lstm_copula day: update alone, predict alone
        upd = np.empty(days)
        pre = np.empty(days)
        for i, row in enumerate(r[warmup + days : warmup + 2 * days]):
            t0 = time.perf_counter()
            lc.predict()
            t1 = time.perf_counter()
            lc.update(row)
            upd[i] = time.perf_counter() - t1
            pre[i] = t1 - t0
        best.setdefault("update", 1e3 * upd)
        best.setdefault("predict", 1e3 * pre)
        if upd.mean() * 1e3 < best["update"].mean():
            best["update"], best["predict"] = 1e3 * upd, 1e3 * pre
    base_mean = best["gauss_mc"].mean()
    print(f"\n{label}: {d} assets, {n_sc} scenarios, {days} timed days, best of {repeat}")
    print(f"{'':<14}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'x gauss':>9}")
    for name in ("risk day", "lstm_copula", "gauss_mc", "update", "predict"):
        ms = best[name]
        print(
            f"{name:<14}{ms.mean():>9.2f}{np.median(ms):>9.2f}{np.percentile(ms, 99):>9.2f}"
            f"{ms.mean() / base_mean:>9.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--scenarios", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="also time training (15 y x 10 assets)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --train")
    ap.add_argument(
        "--no-keep-heap",
        action="store_true",
        help="leave glibc's malloc thresholds alone (stream_app.heap; the worker sets them)",
    )
    args = ap.parse_args()
    if not args.no_keep_heap:
        print(f"stream_app.heap.keep_heap(): {keep_heap()}")
    torch.set_num_threads(1)
    from producers.history import load_history

    panel = load_history(str(shared_daily()))
    r10 = panel.log_returns()
    warmup = 400
    need = warmup + 2 * args.days
    bench("real panel", r10[:need], warmup, args.days, args.scenarios, args.repeat)
    rng = np.random.default_rng(42)
    r100 = 0.01 * rng.standard_t(5, size=(need, 100))
    bench("simulated", r100, warmup, args.days, args.scenarios, args.repeat)
    if args.train:
        p = panel.between("2007-12-31", "2022-12-31")
        t0 = time.perf_counter()
        art = fit_artifact([p], None, seed=0, progress=True, num_threads=args.threads)
        el = time.perf_counter() - t0
        print(
            f"\ntraining on {p.n_days} days x {p.n_assets} assets, {args.threads} thread(s): "
            f"{el:.1f} s, "
            f"{art.metadata['epochs_run']} epochs, val nll {art.metadata['val_nll']:.4f} "
            f"(static t {art.metadata['val_nll_static_t']:.4f})"
        )


if __name__ == "__main__":
    main()

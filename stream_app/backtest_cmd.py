"""`riskmon backtest`: walk-forward evaluation of the engine's models on history."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import backtest as bt
from models.panel import Panel
from models.walkforward import WalkForwardResult, walk_forward
from stream_app.portfolio import Portfolio
from stream_app.risk import build_model

FORECAST_COLUMNS = (
    "date",
    "model",
    "realized",
    "var95",
    "var975",
    "var99",
    "es95",
    "es975",
    "es99",
)


@dataclass(frozen=True)
class BacktestPlan:
    """What to run: a panel (warm-up included), a portfolio, models and the scored period."""

    panel: Panel
    portfolio: Portfolio
    models: tuple[str, ...]
    start: np.datetime64
    end: np.datetime64
    seed: int = 0


@dataclass(frozen=True)
class ModelScore:
    """The figures printed per model."""

    model: str
    n_days: int
    n_forecasts: int
    exceptions: dict[float, int]
    expected: dict[float, float]
    kupiec_p: dict[float, float]
    cc_p: dict[float, float]
    zones: list[tuple[int, int, int, str]]
    z2: float
    fz0: float
    pinball: float
    mean_update_ms: float


def _run_one(args: tuple) -> WalkForwardResult:
    name, weights, returns, dates, start, end, seed, progress_queue = args
    model, _version = build_model(name, weights, seed=seed)
    pending = [0]

    def tick(n: int) -> None:
        pending[0] += n
        if pending[0] >= 25 and progress_queue is not None:
            progress_queue.put((name, pending[0]))
            pending[0] = 0

    result = walk_forward(model, returns, dates, start, end, progress=tick)
    if progress_queue is not None and pending[0]:
        progress_queue.put((name, pending[0]))
    return result


def run_models(
    plan: BacktestPlan, *, jobs: int = 1, show_progress: bool = True
) -> list[WalkForwardResult]:
    """Walk every model of the plan forward, ``jobs`` processes at a time."""
    panel = plan.panel.select(plan.portfolio.assets)
    returns = panel.log_returns()
    dates = panel.dates[1:]
    weights = plan.portfolio.weight_array
    for name in plan.models:  # fail fast (missing artifact, bad name) before any work
        build_model(name, weights, seed=plan.seed)
    n_fed = int(np.searchsorted(dates, plan.end, side="right"))
    manager = mp.Manager() if show_progress else None
    progress_queue = manager.Queue() if manager is not None else None
    tasks = [
        (name, weights, returns, dates, plan.start, plan.end, plan.seed, progress_queue)
        for name in plan.models
    ]
    try:
        if jobs <= 1 or len(tasks) == 1:
            if not show_progress:
                return [_run_one(t) for t in tasks]
            return _with_progress(lambda: [_run_one(t) for t in tasks], plan, n_fed, progress_queue)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_run_one, t) for t in tasks]
            if show_progress:
                _with_progress(lambda: [f.result() for f in futures], plan, n_fed, progress_queue)
            return [f.result() for f in futures]
    finally:
        if manager is not None:
            manager.shutdown()


def _with_progress(work, plan: BacktestPlan, n_fed: int, progress_queue) -> list:
    """Run ``work`` in a thread while a rich progress bar drains ``progress_queue``."""
    import threading

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    box: dict = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    with Progress(
        TextColumn("{task.description:>16}"),
        BarColumn(),
        TextColumn("{task.completed:>5}/{task.total} days"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        ids = {name: bar.add_task(name, total=n_fed) for name in plan.models}
        thread.start()
        while thread.is_alive() or not progress_queue.empty():
            try:
                name, n = progress_queue.get(timeout=0.1)
                bar.advance(ids[name], n)
            except queue.Empty:
                continue
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def score_result(result: WalkForwardResult) -> ModelScore:
    """Backtest statistics of one model over its scored days with a forecast."""
    ok = np.isfinite(result.var).all(axis=1) & np.isfinite(result.es).all(axis=1)
    y = result.realized[ok]
    var = result.var[ok]
    es = result.es[ok]
    dates = result.dates[ok]
    levels = result.levels
    i95, i975, i99 = levels.index(0.95), levels.index(0.975), levels.index(0.99)
    exceptions, expected, kupiec_p, cc_p = {}, {}, {}, {}
    hit = {}
    for level, i in ((0.95, i95), (0.99, i99)):
        h = hit[level] = bt.hits(y, var[:, i]) if y.size else np.zeros(0, dtype=bool)
        exceptions[level] = int(h.sum())
        expected[level] = float(h.size * (1 - level))
        kupiec_p[level] = (
            bt.kupiec_pof(int(h.sum()), int(h.size), level).pvalue if h.size else np.nan
        )
        cc_p[level] = (
            bt.christoffersen_conditional_coverage(h, level).pvalue if h.size > 1 else np.nan
        )
    zones = []
    if y.size:
        for row in bt.traffic_light_zones(dates, hit[0.99], 0.99):
            zones.append((int(row.year), int(row.n_obs), int(row.n_exceptions), str(row.zone)))
    z2 = bt.acerbi_szekely_z2(y, var[:, i975], es[:, i975], 0.975) if y.size else np.nan
    fz0 = bt.fz0_loss(y, var[:, i975], es[:, i975], 0.975) if y.size else np.nan
    pinball = bt.pinball_loss(y, var[:, i99], 0.99) if y.size else np.nan
    return ModelScore(
        model=result.model,
        n_days=int(result.dates.size),
        n_forecasts=int(ok.sum()),
        exceptions=exceptions,
        expected=expected,
        kupiec_p=kupiec_p,
        cc_p=cc_p,
        zones=zones,
        z2=float(z2),
        fz0=float(fz0),
        pinball=float(pinball),
        mean_update_ms=float(np.mean(result.update_seconds) * 1e3),
    )


def write_forecasts(path: Path, results: list[WalkForwardResult]) -> int:
    """Write ``forecasts.csv`` (percent units); returns the number of rows written.

    Columns are exactly ``date,model,realized,var95,var975,var99,es95,es975,es99``;
    days on which a model had no forecast yet (warm-up) are left out.
    """
    rows = 0
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FORECAST_COLUMNS)
        for res in results:
            order = [res.levels.index(lv) for lv in (0.95, 0.975, 0.99)]
            for d, y, v, e in zip(res.dates, res.realized, res.var, res.es, strict=True):
                if not (np.isfinite(v).all() and np.isfinite(e).all()):
                    continue
                writer.writerow(
                    [str(d), res.model, f"{100 * y:.6f}"]
                    + [f"{100 * v[i]:.6f}" for i in order]
                    + [f"{100 * e[i]:.6f}" for i in order]
                )
                rows += 1
    return rows


def write_summary(path: Path, plan: BacktestPlan, scores: list[ModelScore]) -> None:
    """Machine-readable summary of the run."""
    doc = {
        "period": [str(plan.start), str(plan.end)],
        "portfolio": dict(zip(plan.portfolio.assets, plan.portfolio.weights, strict=True)),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "models": [
            {
                "model": s.model,
                "n_days": s.n_days,
                "n_forecasts": s.n_forecasts,
                "exceptions": {str(k): v for k, v in s.exceptions.items()},
                "expected_exceptions": {str(k): v for k, v in s.expected.items()},
                "kupiec_p": {str(k): v for k, v in s.kupiec_p.items()},
                "conditional_coverage_p": {str(k): v for k, v in s.cc_p.items()},
                "traffic_light_99": [
                    {"year": y, "n_obs": n, "exceptions": e, "zone": z} for y, n, e, z in s.zones
                ],
                "z2_975": s.z2,
                "fz0_975": s.fz0,
                "pinball_99": s.pinball,
                "mean_update_ms": s.mean_update_ms,
            }
            for s in scores
        ],
    }
    path.write_text(json.dumps(doc, indent=2, default=float))

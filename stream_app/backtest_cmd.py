"""`riskmon backtest`: walk-forward evaluation of the engine's models on history."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models import backtest as bt
from models.panel import Panel
from models.walkforward import WalkForwardResult, walk_forward
from stream_app.portfolio import Portfolio
from stream_app.risk import build_model

#: ``--retrain`` modes: use the shipped artifacts, or retrain the deep models before each year.
RETRAIN_MODES = ("none", "yearly")

#: Models that ``--retrain yearly`` retrains (the others have nothing to train).
RETRAINABLE = ("lstm_copula", "cnn")

#: Training settings per deep model under ``--retrain yearly``, on top of each recipe's
#: defaults (``train_lstm_copula.DEFAULT_FIT``, ``CnnConfig()``); tests shrink them.
#: ``lstm_copula`` follows the documented walk-forward recipe (``python -m
#: stream_app.train_lstm_copula --walk-forward ... --extra-shipped --warm-start
#: --warm-epochs 5 --stride 2``): each year's model starts from the previous year's
#: weights, and with ``extra_shipped`` it also trains on the shipped history cut at
#: the same date (unless the backtest's data is the shipped history itself).
RETRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "lstm_copula": {
        "num_threads": 1,
        "warm_start": True,
        "warm_start_epochs": 5,
        "stride": 2,
        "extra_shipped": True,
    },
    "cnn": {"threads": 2},
}

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
class Retrain:
    """How ``--retrain`` treats the deep models of a backtest.

    Parameters
    ----------
    mode : {"none", "yearly"}
        ``"none"``: the shipped artifacts; ``"yearly"``: before each calendar
        year of the period, train on ``history`` cut at the end of the
        previous year, then forecast that year with the fresh model.
    history : Panel, optional
        The data the yearly models train on and walk over (the portfolio's
        assets, up to the period's end); needed for ``"yearly"``.
    source : str
        Which data ``history`` is (``--data`` or "shipped history"), for the summary.
    epochs : int, optional
        Cap on the training epochs of each year (default: each recipe's).
    seed : int
        Training seed.
    warmup_days : int
        Returns fed to each year's model before the year.
    settings : mapping, optional
        Per model, training keyword arguments over :data:`RETRAIN_SETTINGS`
        (and ``"model_kwargs"`` for the model itself), e.g. a smaller network.
    """

    mode: str = "none"
    history: Panel | None = None
    source: str = "shipped history"
    epochs: int | None = None
    seed: int = 0
    warmup_days: int = 1000
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in RETRAIN_MODES:
            raise ValueError(f"retrain mode must be one of {RETRAIN_MODES}, got {self.mode!r}")
        if self.mode == "yearly" and self.history is None:
            raise ValueError("retrain mode 'yearly' needs the training history")
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"training epochs must be >= 1, got {self.epochs}")
        if self.warmup_days < 0:
            raise ValueError(f"warm-up days must be >= 0, got {self.warmup_days}")


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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _in_period(
    res: WalkForwardResult, start: np.datetime64, end: np.datetime64
) -> WalkForwardResult:
    keep = (res.dates >= start) & (res.dates <= end)
    return replace(
        res, dates=res.dates[keep], realized=res.realized[keep], var=res.var[keep], es=res.es[keep]
    )


def _lstm_record(art: Any) -> dict[str, Any]:
    md = art.metadata
    return {
        "model_version": art.model_version,
        "trained_on": [md["trained_from"], md["trained_until"]],
        "epochs": md["epochs_run"],
        "best_epoch": md["best_epoch"],
        "val_metric": "val_nll",
        "val_value": md["val_nll"],
        "val_nll_static_t": md["val_nll_static_t"],
        "train_windows": md["train_windows"],
        "train_seconds": md["train_seconds"],
    }


def _cnn_record(art: Mapping[str, Any]) -> dict[str, Any]:
    period = art["period"]
    return {
        "model_version": art["model_version"],
        "trained_on": [period["first_day"], period["last_target"]],
        "train_rows": period["train"],
        "val_rows": period["val"],
        "epochs": len(art["history"]),
        "best_epoch": art["best_epoch"],
        "val_metric": "val_qlike",
        "val_value": art["best_val_loss"],
        "train_seconds": round(float(art["train_seconds"]), 2),
    }


def _on_year(
    name: str,
    describe: Callable[[Any], dict[str, Any]],
    plan: BacktestPlan,
    years: dict[str, dict[str, Any]],
    log: Callable[[str], None] | None,
) -> Callable[[int, Any, WalkForwardResult], None]:
    """The ``on_year`` callback of a yearly walk-forward: record and report what was trained."""

    def on_year(year: int, art: Any, res: WalkForwardResult) -> None:
        rec = describe(art)
        days = (res.dates >= plan.start) & (res.dates <= plan.end)
        rec["forecast_days"] = int(np.isfinite(res.var[days, 0]).sum())
        years[str(year)][name] = rec
        if log is not None:
            first, last = rec["trained_on"]
            log(
                f"retrain {name} {year}: trained on {first}..{last}, "
                f"{rec['epochs']} epochs (best {rec['best_epoch']}), "
                f"{rec['val_metric']} {rec['val_value']:.4f}, {rec['train_seconds']:.0f} s; "
                f"{rec['forecast_days']} forecasts in the period"
            )

    return on_year


def run_retrained(
    plan: BacktestPlan,
    retrain: Retrain,
    *,
    log: Callable[[str], None] | None = _stderr,
) -> tuple[list[WalkForwardResult], dict[str, Any]]:
    """Walk the deep models of ``plan`` forward, retraining each before every calendar year.

    For each year ``Y`` of ``plan.start .. plan.end`` the model is trained on
    ``retrain.history`` cut at ``Y-1``-12-31 (nothing of ``Y`` or later; the
    ``lstm_copula`` recipe of :data:`RETRAIN_SETTINGS` adds the shipped history,
    cut the same way, and starts from the previous year's weights),
    fed the ``retrain.warmup_days`` returns before ``Y`` and walked over
    ``Y``; the years are concatenated and cut to the period. Reuses
    :func:`stream_app.train_lstm_copula.walk_forward_yearly` and
    :func:`stream_app.train_cnn.walk_forward_yearly`.

    Returns
    -------
    results : list of WalkForwardResult
        One per model of ``plan.models`` (all must be in :data:`RETRAINABLE`).
    record : dict
        ``{"mode", "data", "assets", "first_day", "epochs", "seed", "warmup_days",
        "years": {year: {model: {"trained_on": [first, last], "epochs", "val_metric",
        "val_value", ...}}}}`` for ``summary.json``.
    """
    if retrain.mode != "yearly" or retrain.history is None:
        raise ValueError(f"run_retrained needs retrain mode 'yearly', got {retrain.mode!r}")
    unknown = [m for m in plan.models if m not in RETRAINABLE]
    if unknown:
        raise ValueError(f"only {', '.join(RETRAINABLE)} can be retrained, got {unknown}")
    history = retrain.history.select(plan.portfolio.assets).between(None, plan.end)
    weights = plan.portfolio.weight_array
    years = list(range(int(str(plan.start)[:4]), int(str(plan.end)[:4]) + 1))
    record: dict[str, Any] = {
        "mode": "yearly",
        "data": retrain.source,
        "assets": list(history.assets),
        "first_day": str(history.dates[0]),
        "epochs": retrain.epochs,
        "seed": retrain.seed,
        "warmup_days": retrain.warmup_days,
        "years": {str(y): {} for y in years},
    }
    results = []
    for name in plan.models:
        kwargs: dict[str, Any] = {"seed": retrain.seed, **RETRAIN_SETTINGS.get(name, {})}
        kwargs.update(retrain.settings.get(name, {}))
        if retrain.epochs is not None:
            kwargs["max_epochs"] = int(retrain.epochs)
        trainer: Any
        if name == "lstm_copula":
            from stream_app import train_lstm_copula as trainer

            if kwargs.pop("extra_shipped", False) and retrain.source != "shipped history":
                # the shipped history is cut at each year like the data (no look-ahead)
                kwargs["extra_panels"] = [trainer.load_panel(None)]
                record["lstm_copula_extra_training_data"] = "shipped history"
            model_kwargs: dict[str, Any] = {"seed": plan.seed}
            describe: Callable[[Any], dict[str, Any]] = _lstm_record
        else:
            from stream_app import train_cnn as trainer

            model_kwargs = {}
            kwargs["source"] = retrain.source
            describe = _cnn_record
        model_kwargs.update(kwargs.pop("model_kwargs", {}))
        if log is not None:
            log(f"retrain {name}: {years[0]}..{years[-1]}, trained on {retrain.source}")
        on_year = _on_year(name, describe, plan, record["years"], log)
        res = trainer.walk_forward_yearly(
            history,
            weights,
            years,
            kwargs,
            model_kwargs=model_kwargs,
            warm_days=retrain.warmup_days,
            on_year=on_year,
        )
        results.append(_in_period(res, plan.start, plan.end))
    return results, record


def run_backtest(
    plan: BacktestPlan,
    retrain: Retrain | None = None,
    *,
    jobs: int = 1,
    show_progress: bool = True,
    log: Callable[[str], None] | None = _stderr,
) -> tuple[list[WalkForwardResult], dict[str, Any]]:
    """Every model of ``plan``: the deep ones retrained per ``retrain``, the rest as is.

    Returns the results in ``plan.models`` order and the ``"retrain"``
    record of ``summary.json``.
    """
    retrain = retrain or Retrain()
    if retrain.mode == "none":
        return run_models(plan, jobs=jobs, show_progress=show_progress), {"mode": "none"}
    deep = tuple(m for m in plan.models if m in RETRAINABLE)
    if not deep:
        raise ValueError(
            f"--retrain yearly retrains the deep models ({', '.join(RETRAINABLE)}); "
            f"--models {','.join(plan.models)} has none of them"
        )
    fixed = tuple(m for m in plan.models if m not in deep)
    by_name: dict[str, WalkForwardResult] = {}
    if fixed:
        done = run_models(replace(plan, models=fixed), jobs=jobs, show_progress=show_progress)
        by_name.update(zip(fixed, done, strict=True))
    retrained, record = run_retrained(replace(plan, models=deep), retrain, log=log)
    by_name.update(zip(deep, retrained, strict=True))
    return [by_name[m] for m in plan.models], record


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


@dataclass(frozen=True)
class LossComparison:
    """Diebold-Mariano comparison of one model's FZ0 losses with a reference model's.

    ``mean_diff`` is the mean of ``FZ0(model) - FZ0(reference)`` over the
    ``n_days`` both forecast (negative: the model is better); ``pvalue`` is
    two-sided and ``pvalue_less`` one-sided for H1 "the model has the lower
    expected loss", both with a Newey-West variance.
    """

    model: str
    reference: str
    n_days: int
    model_fz0: float
    reference_fz0: float
    mean_diff: float
    statistic: float
    pvalue: float
    pvalue_less: float


def _fz0_by_day(result: WalkForwardResult, level: float) -> dict[np.datetime64, float]:
    i = result.levels.index(level)
    ok = np.isfinite(result.var[:, i]) & np.isfinite(result.es[:, i])
    losses = bt.fz0_losses(result.realized[ok], result.var[ok, i], result.es[ok, i], level)
    return dict(zip(result.dates[ok].tolist(), losses.tolist(), strict=True))


def compare_fz0(
    results: list[WalkForwardResult],
    reference: str | None = None,
    *,
    classical: tuple[str, ...] = (),
    level: float = 0.975,
) -> list[LossComparison]:
    """Each model's FZ0 loss against one reference model's, by Diebold-Mariano.

    All models are compared on the same days: those on which every model of
    ``results`` has a forecast. The reference is ``reference`` if given, else
    the model of ``classical`` with the lowest mean FZ0 on those days (the best
    classical baseline of the run). Returns one row per other model; empty if
    there is no reference, or fewer than 2 common days.
    """
    losses = {r.model: _fz0_by_day(r, level) for r in results}
    if not losses:
        return []
    days = sorted(set.intersection(*(set(d) for d in losses.values())))
    if len(days) < 2:
        return []
    series = {m: np.array([by_day[d] for d in days]) for m, by_day in losses.items()}
    if reference is None:
        candidates = [m for m in series if m in classical]
        if not candidates:
            return []
        reference = min(candidates, key=lambda m: float(series[m].mean()))
    if reference not in series:
        raise ValueError(f"reference model {reference!r} is not among {sorted(series)}")
    ref = series[reference]
    rows = []
    for model, loss in series.items():
        if model == reference:
            continue
        dm = bt.diebold_mariano(loss, ref)
        rows.append(
            LossComparison(
                model=model,
                reference=reference,
                n_days=len(days),
                model_fz0=float(loss.mean()),
                reference_fz0=float(ref.mean()),
                mean_diff=float((loss - ref).mean()),
                statistic=float(dm.statistic),
                pvalue=float(dm.pvalue),
                pvalue_less=float(dm.pvalue_less),
            )
        )
    return rows


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


def write_summary(
    path: Path,
    plan: BacktestPlan,
    scores: list[ModelScore],
    retrain: Mapping[str, Any] | None = None,
    comparisons: Sequence[LossComparison] = (),
) -> None:
    """Machine-readable summary of the run.

    ``retrain``: the record of :func:`run_backtest`; ``comparisons``: the
    :func:`compare_fz0` rows.
    """
    doc = {
        "period": [str(plan.start), str(plan.end)],
        "portfolio": dict(zip(plan.portfolio.assets, plan.portfolio.weights, strict=True)),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "retrain": dict(retrain) if retrain is not None else {"mode": "none"},
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
        "fz0_975_diebold_mariano": [asdict(c) for c in comparisons],
    }
    path.write_text(json.dumps(doc, indent=2, default=float))

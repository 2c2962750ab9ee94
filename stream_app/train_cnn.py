"""Train the heatmap CNN volatility model, save/load its artifact, evaluate it.

The artifact is a ``torch.save`` of a dict of tensors and plain types (str,
int, float, bool, None, list, dict), so ``torch.load(path, weights_only=True)``
loads it without executing code. It holds the weights, the
:class:`~models.cnn.CnnConfig`, the fitted heatmap specs
(``HeatmapSpec.to_dict``), the training period, validation and test metrics
and the version.

    python -m stream_app.train_cnn train                       # the shipped artifact
    python -m stream_app.train_cnn train --data ../shared/data/daily --until 2019-12-31 \\
        --out runs/cnn
    python -m stream_app.train_cnn evaluate --data ../shared/data/daily --retrain yearly \\
        --years 2008,2012-2023 --out runs/cnn-eval
    python -m stream_app.train_cnn evaluate --data ../shared/data/daily --years 2012-2023 \\
        --artifact stream_app/artifacts/cnn-v1.pt --out runs/cnn-transfer

The shipped default (:func:`default_artifact_path`) is trained only on the
history the package ships (``producers.history.load_history(None)``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.cnn import (
    CnnConfig,
    SampleSet,
    TrainResult,
    VolCNN,
    VolForecaster,
    VolInputs,
    build_inputs,
    fit_specs,
    make_artifact,
    pairs_of,
    predict_log_var,
    source_rows,
    stack_samples,
    train_network,
    vol_targets,
)
from models.cnn_var import CnnVaR
from models.exceptions import DataError
from models.panel import Panel
from models.vol_baselines import GarchVol, HarRV, RegressionVol, ewma_vol
from models.vol_eval import (
    daily_mean_losses,
    dm_test,
    mincer_zarnowitz,
    qlike_losses,
    score_vol,
    squared_error_losses,
)
from models.walkforward import WalkForwardResult
from stream_app.train_common import (
    ARTIFACT_DIR,
    load_panel,
    parse_day,
    parse_years,
    rich_progress,
    torch_threads,
    walk_forward_retrained,
    write_artifact,
)

#: Version of the training recipe and the shipped artifact's file stem.
VERSION = "cnn-v1"

#: Models of the evaluation, in report order ("cnn+har": the mean of the two variance forecasts).
EVAL_MODELS: tuple[str, ...] = (
    "cnn",
    "cnn+har",
    "har",
    "har_log",
    "ewma",
    "garch",
    "linear",
    "svr",
    "tree",
)


class ArtifactError(ValueError):
    """A file that is not a usable CNN artifact."""


def default_artifact_path() -> Path:
    """The artifact shipped with the package (trained on the shipped history only)."""
    return ARTIFACT_DIR / f"{VERSION}.pt"


# ----------------------------------------------------------------------------------------------
# Data preparation
# ----------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A panel turned into CNN inputs and targets (all rows, before any split)."""

    panel: Panel
    config: CnnConfig
    weights: NDArray[np.float64]
    inputs: VolInputs
    target: NDArray[np.float64]  # (n_rows, n_series, n_horizons) realised vol
    dates: NDArray[np.datetime64]  # (n_rows,) date of each row's bar

    @property
    def n_assets(self) -> int:
        return self.panel.n_assets

    def relative_target(self) -> NDArray[np.float64]:
        return self.target**2 / self.inputs.scale[:, :, None] ** 2


def prepare(panel: Panel, config: CnnConfig, weights: Sequence[float] | None = None) -> Prepared:
    """Inputs (bars per ``config.bars``) and targets of every ready day of ``panel``."""
    if panel.n_days < config.warmup + max(config.horizons) + 20:
        raise DataError(
            f"panel has {panel.n_days} days; the CNN needs at least "
            f"{config.warmup + max(config.horizons) + 20}"
        )
    w = np.full(panel.n_assets, 1.0 / panel.n_assets) if weights is None else np.asarray(weights)
    inputs = build_inputs(w, config, panel=panel)
    target = vol_targets(inputs.returns, inputs.bar_index, config.horizons)
    return Prepared(panel, config, w, inputs, target, panel.dates[inputs.bar_index])


def split_rows(
    valid: NDArray[np.bool_], purge: int, fractions: tuple[float, float] = (0.70, 0.15)
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Chronological train/validation/test rows with ``purge`` rows dropped at each cut.

    ``valid`` marks the rows with every target known. The last ``purge`` rows
    of train and validation are dropped so that no training target overlaps
    a validation day (nor a validation target a test day).

    Examples
    --------
    >>> tr, va, te = split_rows(np.ones(100, dtype=bool), purge=5)
    >>> [int(v) for v in (tr[0], tr[-1], va[0], va[-1], te[0], te[-1])]
    [0, 64, 70, 79, 85, 99]
    """
    rows = np.flatnonzero(valid)
    n = rows.size
    a = round(fractions[0] * n)
    b = round((fractions[0] + fractions[1]) * n)
    train = rows[: max(a - purge, 0)]
    val = rows[a : max(b - purge, a)]
    test = rows[b:]
    if train.size < 10 or val.size < 5 or test.size < 1:
        raise DataError(
            f"too few rows to split: train {train.size}, val {val.size}, test {test.size}"
        )
    return train, val, test


def _samples(prep: Prepared, specs: Any) -> SampleSet:
    series_rows, cross_rows = source_rows(specs, prep.inputs.windows, prep.n_assets)
    return SampleSet(
        series_rows,
        cross_rows,
        prep.inputs.har.astype(np.float32),
        prep.relative_target(),
        portfolio=prep.n_assets,
    )


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------


class _Bar:
    """A rich progress bar for epochs x batches (or nothing)."""

    def __init__(self, enabled: bool, label: str = "cnn") -> None:
        self.enabled = enabled
        self.label = label
        self._progress: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            self._progress = rich_progress("{task.description}", "{task.fields[info]}")
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def trainer(self, config: CnnConfig, label: str) -> Callable[[dict[str, Any]], None] | None:
        if self._progress is None:
            return None
        prog = self._progress
        task = prog.add_task(f"{self.label} {label}", total=None, info="")

        def hook(event: dict[str, Any]) -> None:
            if "batch" in event:
                total = config.max_epochs * event["n_batches"]
                prog.update(task, total=total, advance=1)
            else:
                mark = "*" if event.get("best") else " "
                prog.update(
                    task,
                    info=f"epoch {event['epoch']:>2} train {event['train_loss']:.4f} "
                    f"val {event['val_loss']:.4f}{mark}",
                )

        return hook


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _horizons(horizon: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(horizon, int | np.integer):
        return (int(horizon),)
    return tuple(int(h) for h in horizon)


def _metrics(
    prep: Prepared, rows: NDArray[np.intp], log_var: NDArray[np.float64]
) -> dict[str, Any]:
    """QLIKE and MZ R² per horizon for the assets (pooled) and the portfolio."""
    a = prep.n_assets
    scale = prep.inputs.scale[rows]
    vol = scale[:, :, None] * np.exp(
        0.5 * log_var.reshape(rows.size, -1, len(prep.config.horizons))
    )
    out: dict[str, Any] = {}
    for j, h in enumerate(prep.config.horizons):
        y = prep.target[rows, :, j]
        f = vol[:, :, j]
        ok = np.isfinite(y).all(axis=1) & (y > 0).all(axis=1)
        entry: dict[str, float] = {"n_rows": int(ok.sum())}
        for group, cols in (("assets", slice(0, a)), ("portfolio", slice(a, a + 1))):
            yy, ff = y[ok][:, cols].ravel(), f[ok][:, cols].ravel()
            if yy.size >= 3:
                entry[f"{group}_qlike"] = float(np.mean(qlike_losses(yy, ff)))
                entry[f"{group}_mz_r2"] = float(mincer_zarnowitz(yy, ff).r2)
        out[f"h{h}"] = entry
    return out


@dataclass
class Fitted:
    """A network trained on a :class:`Prepared` panel, before it is saved."""

    config: CnnConfig
    specs: Any
    state_dict: dict[str, torch.Tensor]
    result: Any
    train_rows: NDArray[np.intp]
    val_rows: NDArray[np.intp]

    def forecaster(self) -> VolForecaster:
        return VolForecaster(self.config, self.specs, self.state_dict)

    def network(self) -> VolCNN:
        """A fresh network module holding the trained weights."""
        cfg = self.config
        net = VolCNN(len(cfg.channels), cfg.n_extra, len(cfg.horizons), cfg)
        net.load_state_dict(self.state_dict)
        return net


def fit_rows(
    prep: Prepared,
    train_rows: NDArray[np.intp],
    val_rows: NDArray[np.intp],
    *,
    seed: int = 0,
    init_state: Mapping[str, torch.Tensor] | None = None,
    config: CnnConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    extra: Sequence[tuple[Prepared, NDArray[np.intp]]] = (),
) -> tuple[Fitted, SampleSet]:
    """Fit the specs on the training rows, then train the network (early stopping on ``val_rows``).

    ``extra``: more training rows from other panels, ``(prepared panel, rows)``
    pairs (their series are rendered with the same specs, fitted on ``prep``'s
    training rows only, and the network trains on all rows at once; validation
    stays on ``prep``). The returned sample set is ``prep``'s alone.
    """
    cfg = config or prep.config
    specs = fit_specs(prep.inputs.windows[train_rows], prep.n_assets, cfg)
    data = _samples(prep, specs)
    s = prep.inputs.n_series
    train_pairs = pairs_of(train_rows, s)
    train_data = data
    if extra:
        train_data, offsets = stack_samples([data, *(_samples(x, specs) for x, _ in extra)])
        train_pairs = np.concatenate(
            [train_pairs]
            + [
                pairs_of(rows + off, x.inputs.n_series)
                for (x, rows), off in zip(extra, offsets[1:], strict=True)
            ]
        )
    result = train_network(
        train_data,
        train_pairs,
        pairs_of(val_rows, s),
        cfg,
        seed=seed,
        init_state=init_state,
        progress=progress,
    )
    return Fitted(cfg, specs, result.state_dict, result, train_rows, val_rows), data


def extra_rows(extra: Prepared, before: np.datetime64) -> NDArray[np.intp]:
    """Rows of another panel whose whole target (the row's day + every horizon) lies
    before ``before``: the training rows it adds to a fit whose validation starts
    then (no extra target overlaps a validation or test day)."""
    max_h = max(extra.config.horizons)
    end_bar = extra.inputs.bar_index + max_h
    ok = end_bar < extra.panel.n_days
    ends = np.full(end_bar.shape, np.datetime64("NaT"), dtype=extra.panel.dates.dtype)
    ends[ok] = extra.panel.dates[end_bar[ok]]
    ready = np.all(np.isfinite(extra.target), axis=(1, 2))
    return np.flatnonzero(ok & ready & (ends < before))


def train(
    panel: Panel,
    until: np.datetime64 | str | None = None,
    *,
    horizon: int | Sequence[int] = (1, 5, 10),
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    config: CnnConfig | None = None,
    weights: Sequence[float] | None = None,
    threads: int = 2,
    source: str = "panel",
    file_name: str | None = None,
) -> Path:
    """Train the CNN on ``panel`` up to ``until`` and write a versioned artifact.

    Parameters
    ----------
    panel : Panel
        Daily bars; only days ``<= until`` are used.
    until : date-like, optional
        Last day of data the model may see (default: the panel's last day).
    horizon : int or sequence of int, default=(1, 5, 10)
        Forecast horizons (one network output each); ``CnnVaR`` uses ``h = 1``.
    seed : int, default=0
    out_dir : path, optional
        Where to write ``<VERSION>.pt`` (default :data:`ARTIFACT_DIR`).
    progress : bool, default=True
        Show a rich progress bar.
    config : CnnConfig, optional
        Hyperparameters (``horizons`` replaced by ``horizon``).
    weights : sequence of float, optional
        Weights of the portfolio series used in training (default equal).
    threads : int, default=2
        ``torch.set_num_threads`` while training (restored afterwards).
    source : str
        Description of the data, stored in the artifact.
    file_name : str, optional
        Artifact file name (default ``<VERSION>.pt``).

    Returns
    -------
    Path
        The artifact written.

    Notes
    -----
    Rows (days) are split chronologically 70/15/15 with the last
    ``max(horizon)`` rows before each cut purged; the network stops early on
    the validation loss; the test part only feeds the stored test metrics.
    """
    cfg = replace(config or CnnConfig(), horizons=_horizons(horizon))
    if until is not None:
        panel = panel.between(None, until)
    prep = prepare(panel, cfg, weights)
    valid = np.all(np.isfinite(prep.target), axis=(1, 2))
    train_rows, val_rows, test_rows = split_rows(valid, purge=max(cfg.horizons))
    artifact, _ = _fit_artifact_rows(
        prep,
        train_rows,
        val_rows,
        test_rows=test_rows,
        model_version=f"{VERSION}+seed{seed}",
        seed=seed,
        threads=threads,
        progress=progress,
        label="train",
        source=source,
    )
    out = Path(out_dir) if out_dir is not None else ARTIFACT_DIR
    return write_artifact(artifact, out / (file_name or f"{VERSION}.pt"))


def _span(dates: NDArray[np.datetime64], rows: NDArray[np.intp]) -> list[str]:
    """``[first, last]`` day of ``rows``, as ISO strings."""
    return [str(dates[rows[0]]), str(dates[rows[-1]])]


def _fit_artifact_rows(
    prep: Prepared,
    train_rows: NDArray[np.intp],
    val_rows: NDArray[np.intp],
    *,
    test_rows: NDArray[np.intp] | None = None,
    last_target: str | None = None,
    model_version: str,
    seed: int,
    threads: int,
    progress: bool,
    label: str,
    source: str,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], TrainResult]:
    """Train on ``prep``'s rows and assemble the artifact (:func:`models.cnn.make_artifact`).

    The network trains on ``train_rows`` and stops early on ``val_rows``
    (:func:`fit_rows`, ``threads`` torch threads); the artifact's metrics
    score ``val_rows`` and, if given, ``test_rows``. Its ``period`` holds the
    days of the row sets, then ``last_target`` if given, and the panel's last day.

    Returns
    -------
    artifact : dict
    result : TrainResult
        The training record (history, best epoch and loss).
    """
    cfg = prep.config
    scored = {"val": val_rows} if test_rows is None else {"val": val_rows, "test": test_rows}
    t0 = time.perf_counter()
    with torch_threads(threads):
        with _Bar(progress) as bar:
            fitted, data = fit_rows(
                prep,
                train_rows,
                val_rows,
                seed=seed,
                init_state=init_state,
                progress=bar.trainer(cfg, label),
            )
        net = fitted.network()
        s = prep.inputs.n_series
        metrics = {
            name: _metrics(prep, rows, predict_log_var(net, data, pairs_of(rows, s), cfg))
            for name, rows in scored.items()
        }
    seconds = time.perf_counter() - t0
    panel = prep.panel
    period: dict[str, Any] = {"first_day": str(panel.dates[0])}
    period.update(
        {name: _span(prep.dates, rows) for name, rows in (("train", train_rows), *scored.items())}
    )
    if last_target is not None:
        period["last_target"] = last_target
    period["until"] = str(panel.dates[-1])
    y_train = prep.target[train_rows]
    result = fitted.result
    artifact = make_artifact(
        cfg,
        fitted.specs,
        fitted.state_dict,
        version=VERSION,
        model_version=model_version,
        torch_version=torch.__version__,
        source=str(source),
        assets=list(panel.assets),
        weights=[float(v) for v in prep.weights],
        period=period,
        target_range={
            f"h{h}": [float(np.nanmin(y_train[..., j])), float(np.nanmax(y_train[..., j]))]
            for j, h in enumerate(cfg.horizons)
        },
        metrics=metrics,
        history=[{k: float(v) for k, v in r.items()} for r in result.history],
        best_epoch=int(result.best_epoch),
        seed=int(seed),
        threads=int(threads),
        train_seconds=float(seconds),
        n_train_pairs=int(result.n_train),
    )
    return artifact, result


def load(path: str | Path | None = None) -> dict[str, Any]:
    """Load an artifact with ``torch.load(weights_only=True)`` and check its layout."""
    p = Path(path) if path is not None else default_artifact_path()
    if not p.is_file():
        raise ArtifactError(
            f"{p}: no CNN artifact there (train one: python -m stream_app.train_cnn train)"
        )
    try:
        art = torch.load(p, weights_only=True, map_location="cpu")
    except Exception as exc:  # any unpickling failure: a bad file
        raise ArtifactError(f"{p}: not a loadable CNN artifact ({exc})") from exc
    missing = {"format", "config", "specs", "state_dict", "version"} - set(art)
    if missing:
        raise ArtifactError(f"{p}: artifact lacks {sorted(missing)}")
    VolForecaster.from_artifact(art)  # validates config, specs and weights
    return art


_CACHE: dict[str, dict[str, Any]] = {}


class DefaultCnnVaR(CnnVaR):
    """:class:`~models.cnn_var.CnnVaR` that loads the shipped artifact when none is given.

    For the model registry: ``make_model("cnn", weights)`` can build this
    without knowing where the artifact lives.
    """

    def __init__(
        self, weights: Sequence[float], artifact: Mapping[str, Any] | None = None, **params: Any
    ) -> None:
        if artifact is None:
            key = str(default_artifact_path())
            if key not in _CACHE:
                _CACHE[key] = load(key)
            artifact = _CACHE[key]
        super().__init__(weights, artifact, **params)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _year_of(dates: NDArray[np.datetime64]) -> NDArray[np.int64]:
    return dates.astype("datetime64[Y]").astype(np.int64) + 1970


def _flat_features(data: SampleSet, pairs: NDArray[np.intp]) -> NDArray[np.float64]:
    """Features of the paper's regressors: the series' heatmap source rows and the HAR inputs."""
    rows = data.series_rows[pairs[:, 0], pairs[:, 1]].reshape(pairs.shape[0], -1)
    return np.hstack([rows, data.har[pairs[:, 0], pairs[:, 1]]]).astype(np.float64)


def _baseline_forecasts(
    prep: Prepared,
    data: SampleSet,
    fit_rows_: NDArray[np.intp],
    test_rows: NDArray[np.intp],
    until_bar: int,
    models: Sequence[str],
    seed: int,
) -> dict[str, NDArray[np.float64]]:
    """Forecasts (n_test, n_series, n_horizons) of the classical models fitted before ``until_bar``."""
    r = prep.inputs.returns[1:]  # return row j is bar j + 1
    bars = prep.inputs.bar_index[test_rows] - 1
    horizons = prep.config.horizons
    s = prep.inputs.n_series
    out: dict[str, NDArray[np.float64]] = {}
    for name in models:
        if name in ("har", "har_log"):
            out[name] = np.stack(
                [
                    HarRV(h, log=name == "har_log").fit(r, until=until_bar - 1).predict(r)[bars]
                    for h in horizons
                ],
                axis=-1,
            )
        elif name == "ewma":
            out[name] = np.repeat(ewma_vol(r)[bars][:, :, None], len(horizons), axis=2)
        elif name == "garch":
            garch = GarchVol(1).fit(r, until=until_bar - 1)
            out[name] = np.stack([garch.predict(r, h)[bars] for h in horizons], axis=-1)
        elif name in ("linear", "svr", "tree"):
            train_pairs = pairs_of(fit_rows_, s)
            test_pairs = pairs_of(test_rows, s)
            x_train = _flat_features(data, train_pairs)
            x_test = _flat_features(data, test_pairs)
            scale_test = prep.inputs.scale[test_rows].ravel()
            cols = []
            for j in range(len(horizons)):
                y = prep.target[train_pairs[:, 0], train_pairs[:, 1], j]
                sc = prep.inputs.scale[train_pairs[:, 0], train_pairs[:, 1]]
                ok = np.isfinite(y) & (y > 0)
                model = RegressionVol(name, seed=seed).fit(x_train[ok], np.log(y[ok] / sc[ok]))
                cols.append((scale_test * model.predict(x_test)).reshape(test_rows.size, s))
            out[name] = np.stack(cols, axis=-1)
    return out


def _cnn_forecast(
    fitted_or_forecaster: Any, data: SampleSet, prep: Prepared, rows: NDArray[np.intp]
) -> NDArray[np.float64]:
    cfg = prep.config
    if isinstance(fitted_or_forecaster, Fitted):
        net = fitted_or_forecaster.network()
    else:
        net = fitted_or_forecaster.net
    s = prep.inputs.n_series
    o = predict_log_var(net, data, pairs_of(rows, s), cfg).reshape(rows.size, s, -1)
    return prep.inputs.scale[rows][:, :, None] * np.exp(0.5 * o)


def score_table(
    prep: Prepared,
    rows: NDArray[np.intp],
    forecasts: Mapping[str, NDArray[np.float64]],
    periods: Mapping[str, tuple[int, int]],
    horizons: Sequence[int],
    reference: str = "har",
) -> list[dict[str, Any]]:
    """Scores per period, horizon, group (assets pooled / portfolio) and model.

    Each record: ``n_obs``, MZ ``alpha/beta/r2``, ``mean_asset_r2`` (assets
    only: the average of the per-asset MZ R²), ``rmse``, ``rmse01`` (RMSE
    over the range of the realised volatility of the whole panel), ``qlike``,
    and Diebold-Mariano against ``reference`` on the daily QLIKE and
    squared-error losses (cross-sectional mean over assets for the pooled
    group; statistic < 0 means the model beats the reference).
    """
    a = prep.n_assets
    years = _year_of(prep.dates[rows])
    names = list(forecasts)
    records: list[dict[str, Any]] = []
    for h in horizons:
        j = prep.config.horizons.index(h)
        y_all = prep.target[rows, :, j]
        lo = float(np.nanmin(prep.target[..., j]))
        hi = float(np.nanmax(prep.target[..., j]))
        for period, (y0, y1) in periods.items():
            in_period = (years >= y0) & (years <= y1)
            ok = in_period & np.isfinite(y_all).all(axis=1) & (y_all > 0).all(axis=1)
            for name in names:
                ok &= np.isfinite(forecasts[name][:, :, j]).all(axis=1)
            if ok.sum() < 10:
                continue
            day = rows[ok]
            for group, cols in (("assets", list(range(a))), ("portfolio", [a])):
                y = y_all[ok][:, cols]
                losses_q: dict[str, NDArray[np.float64]] = {}
                losses_se: dict[str, NDArray[np.float64]] = {}
                base: dict[str, dict[str, Any]] = {}
                for name in names:
                    f = np.maximum(forecasts[name][ok][:, cols, j], 1e-12)
                    sc = score_vol(y.ravel(), f.ravel(), lo, hi)
                    rec: dict[str, Any] = {
                        "period": period,
                        "horizon": int(h),
                        "group": group,
                        "model": name,
                        **sc.to_dict(),
                    }
                    if group == "assets":
                        rec["mean_asset_r2"] = float(
                            np.mean(
                                [mincer_zarnowitz(y[:, k], f[:, k]).r2 for k in range(len(cols))]
                            )
                        )
                    dayv = np.repeat(day, len(cols))
                    losses_q[name] = daily_mean_losses(qlike_losses(y.ravel(), f.ravel()), dayv)
                    losses_se[name] = daily_mean_losses(
                        squared_error_losses(y.ravel(), f.ravel()), dayv
                    )
                    base[name] = rec
                for name in names:
                    rec = base[name]
                    if reference in losses_q and name != reference:
                        dq = dm_test(losses_q[name], losses_q[reference], h=int(h))
                        ds = dm_test(losses_se[name], losses_se[reference], h=int(h))
                        rec.update(
                            dm_qlike_stat=float(dq.statistic),
                            dm_qlike_p=float(dq.pvalue),
                            dm_se_stat=float(ds.statistic),
                            dm_se_p=float(ds.pvalue),
                        )
                    records.append(rec)
    return records


def evaluate(
    panel: Panel,
    *,
    years: Sequence[int] | str = "2008,2012-2023",
    retrain: str = "yearly",
    artifact: Mapping[str, Any] | None = None,
    config: CnnConfig | None = None,
    models: Sequence[str] = EVAL_MODELS,
    horizons: Sequence[int] = (5, 10),
    seed: int = 0,
    threads: int = 2,
    warm_epochs: int | None = 4,
    out_dir: str | Path | None = None,
    progress: bool = True,
    periods: Mapping[str, tuple[int, int]] | None = None,
    extra: Sequence[Panel] = (),
) -> dict[str, Any]:
    """Out-of-sample evaluation of the CNN's volatility forecasts against the baselines.

    Parameters
    ----------
    panel : Panel
    years : sequence of int or str, default "2008,2012-2023"
        Test years (forecast origins within them are scored).
    retrain : {"yearly", "none"}
        ``"yearly"``: before each test year, fit the specs and train the
        network on the days whose targets end before that year (last 15 % of
        them for early stopping); ``"none"``: use ``artifact`` as is.
    artifact : mapping, optional
        Needed for ``retrain="none"``.
    config : CnnConfig, optional
        Hyperparameters of the networks trained here.
    models : sequence of str
        Subset of :data:`EVAL_MODELS`; the baselines are refitted before each
        test year on the same data as the network (train + validation).
    horizons : sequence of int, default (5, 10)
        Horizons scored (each must be one of the network's).
    warm_epochs : int or None, default 4
        With ``retrain="yearly"``, start each year after the first from the
        previous year's weights and train at most this many epochs (the
        previous model only saw earlier data); ``None`` trains each year from
        scratch.
    out_dir : path, optional
        Writes ``evaluation.csv`` (one row per day, series, horizon: the
        realised volatility and every model's forecast) and
        ``evaluation.json`` (the scores, the setup, the training records).
    periods : mapping, optional
        Named ``(first_year, last_year)`` ranges scored; default: all test
        years, "2012-2023", "2008", "2020" and each test year.
    extra : sequence of Panel
        More training data for the yearly networks (e.g. the shipped history):
        each year the network also trains on the rows of these panels whose
        targets end before the year's validation period starts
        (:func:`extra_rows`). Validation, test and the baselines stay on ``panel``.
        Measured on ``../shared/data/daily`` (2008, 2012-2023, next-10-day vol):
        the shipped history as extra data made the CNN slightly *worse*
        (2012-2023 assets MZ R² / QLIKE .592 / .313 against .597 / .309 without;
        portfolio .410 / .296 against .430 / .288; 2020 assets .500 / .866
        against .539 / .765), so it is off by default.

    Returns
    -------
    dict
        ``{"setup": ..., "scores": [records of score_table], "training": [...]}``.
    """
    if retrain not in ("yearly", "none"):
        raise ValueError(f"retrain must be 'yearly' or 'none', got {retrain!r}")
    test_years = parse_years(years) if isinstance(years, str) else sorted(int(y) for y in years)
    unknown = set(models) - set(EVAL_MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; valid: {EVAL_MODELS}")
    if retrain == "none":
        if artifact is None:
            raise ValueError("retrain='none' needs an artifact")
        forecaster = VolForecaster.from_artifact(artifact)
        cfg = forecaster.config
    else:
        cfg = config or CnnConfig()
        forecaster = None
    missing_h = [h for h in horizons if h not in cfg.horizons]
    if missing_h:
        raise ValueError(f"horizons {missing_h} are not outputs of the network {cfg.horizons}")
    prep = prepare(panel, cfg)
    extra_preps = [prepare(x, cfg) for x in extra] if retrain == "yearly" else []
    row_years = _year_of(prep.dates)
    max_h = max(cfg.horizons)
    want_cnn = "cnn" in models or "cnn+har" in models
    baselines = [m for m in models if m not in ("cnn", "cnn+har")]
    if "cnn+har" in models and "har" not in baselines:
        baselines.append("har")
    all_rows: list[NDArray[np.intp]] = []
    parts: dict[str, list[NDArray[np.float64]]] = {}
    training: list[dict[str, Any]] = []
    prev_state: dict[str, torch.Tensor] | None = None
    t_start = time.perf_counter()
    with torch_threads(threads):
        with _Bar(progress) as bar:
            for year in test_years:
                test_rows = np.flatnonzero(row_years == year)
                if test_rows.size == 0:
                    continue
                first_bar = int(prep.inputs.bar_index[test_rows[0]])
                # rows whose whole target (t + max_h) lies before the test year
                before = np.flatnonzero(prep.inputs.bar_index + max_h < first_bar)
                if before.size < 300:
                    training.append({"year": year, "skipped": f"{before.size} rows before it"})
                    continue
                n_val = max(round(0.15 * before.size), 50)
                train_rows = before[: before.size - n_val - max_h]
                val_rows = before[before.size - n_val :]
                t0 = time.perf_counter()
                if forecaster is not None:
                    data = _samples(prep, forecaster.specs)
                    cnn = _cnn_forecast(forecaster, data, prep, test_rows) if want_cnn else None
                    rec: dict[str, Any] = {"year": year, "cnn": "artifact"}
                else:
                    year_cfg = cfg
                    warm = prev_state is not None and warm_epochs is not None
                    if warm:
                        year_cfg = replace(cfg, max_epochs=int(warm_epochs))  # type: ignore[arg-type]
                    rec = {"year": year}
                    if want_cnn:
                        val_start = prep.dates[val_rows[0]]
                        more = [(x, extra_rows(x, val_start)) for x in extra_preps]
                        more = [(x, r) for x, r in more if r.size]
                        fitted, data = fit_rows(
                            prep,
                            train_rows,
                            val_rows,
                            seed=seed,
                            config=year_cfg,
                            init_state=prev_state if warm else None,
                            progress=bar.trainer(year_cfg, str(year)),
                            extra=more,
                        )
                        cnn = _cnn_forecast(fitted, data, prep, test_rows)
                        prev_state = fitted.state_dict
                        rec.update(
                            train=_span(prep.dates, train_rows),
                            val=_span(prep.dates, val_rows),
                            best_epoch=fitted.result.best_epoch,
                            epochs=len(fitted.result.history),
                            best_val_loss=fitted.result.best_val_loss,
                            seconds_cnn=time.perf_counter() - t0,
                        )
                        if more:
                            rec["extra_train_rows"] = [int(r.size) for _, r in more]
                    else:
                        specs = fit_specs(prep.inputs.windows[train_rows], prep.n_assets, cfg)
                        data = _samples(prep, specs)
                        cnn = None
                fc = _baseline_forecasts(prep, data, before, test_rows, first_bar, baselines, seed)
                if cnn is not None:
                    if "cnn" in models:
                        fc = {"cnn": cnn, **fc}
                    if "cnn+har" in models:
                        fc["cnn+har"] = np.sqrt(0.5 * (cnn**2 + fc["har"] ** 2))
                rec["seconds_total"] = time.perf_counter() - t0
                training.append(rec)
                all_rows.append(test_rows)
                for name, f in fc.items():
                    parts.setdefault(name, []).append(f)
    if not all_rows:
        raise DataError(f"no test rows in years {test_years}")
    rows = np.concatenate(all_rows)
    order = [m for m in models if m in parts]
    forecasts = {name: np.concatenate(parts[name]) for name in order}
    if periods is None:
        lo, hi = test_years[0], test_years[-1]
        periods = {f"{lo}-{hi}": (lo, hi)}
        if {2012, 2023} <= set(test_years):
            periods["2012-2023"] = (2012, 2023)
        for y in test_years:
            periods[str(y)] = (y, y)
    scores = score_table(prep, rows, forecasts, periods, horizons)
    report = {
        "setup": {
            "retrain": retrain,
            "years": test_years,
            "assets": list(panel.assets),
            "first_day": str(panel.dates[0]),
            "last_day": str(panel.dates[-1]),
            "config": cfg.to_dict(),
            "models": order,
            "horizons": list(horizons),
            "seed": seed,
            "threads": threads,
            "warm_epochs": warm_epochs,
            "artifact_version": None if artifact is None else artifact.get("model_version"),
            "extra": [
                {
                    "assets": len(x.assets),
                    "first_day": str(x.dates[0]),
                    "last_day": str(x.dates[-1]),
                }
                for x in extra
            ],
            "seconds": time.perf_counter() - t_start,
        },
        "scores": scores,
        "training": training,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(report, indent=1, default=float))
        _write_forecast_csv(out / "evaluation.csv", prep, rows, forecasts, horizons)
    return report


def _write_forecast_csv(
    path: Path,
    prep: Prepared,
    rows: NDArray[np.intp],
    forecasts: Mapping[str, NDArray[np.float64]],
    horizons: Sequence[int],
) -> None:
    names = list(forecasts)
    series = [*prep.panel.assets, "portfolio"]
    with path.open("w") as fh:
        fh.write(",".join(["date", "series", "horizon", "realized", *names]) + "\n")
        for h in horizons:
            j = prep.config.horizons.index(h)
            for i, row in enumerate(rows):
                day = str(prep.dates[row])
                for s, sname in enumerate(series):
                    vals = [prep.target[row, s, j]] + [forecasts[n][i, s, j] for n in names]
                    fh.write(
                        f"{day},{sname},{h},"
                        + ",".join("" if not math.isfinite(v) else f"{v:.6g}" for v in vals)
                        + "\n"
                    )


def format_scores(report: Mapping[str, Any], horizon: int = 10) -> str:
    """A plain-text table of the scores at one horizon."""
    lines = [
        f"{'period':<10} {'group':<9} {'model':<8} {'n':>6} {'MZ R2':>6} {'meanR2':>6} "
        f"{'RMSE01':>7} {'QLIKE':>7} {'DM-QL':>6} {'p':>6}"
    ]
    for r in report["scores"]:
        if r["horizon"] != horizon:
            continue
        lines.append(
            f"{r['period']:<10} {r['group']:<9} {r['model']:<8} {r['n_obs']:>6} "
            f"{r['mz_r2']:>6.3f} {r.get('mean_asset_r2', float('nan')):>6.3f} "
            f"{r['rmse01']:>7.4f} {r['qlike']:>7.4f} "
            f"{r.get('dm_qlike_stat', float('nan')):>6.2f} {r.get('dm_qlike_p', float('nan')):>6.3f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Walk-forward VaR/ES with yearly retraining
# ----------------------------------------------------------------------------------------------


def fit_artifact(
    panel: Panel,
    until: np.datetime64 | str | None = None,
    *,
    config: CnnConfig | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    init_state: Mapping[str, torch.Tensor] | None = None,
    threads: int = 2,
    progress: bool = False,
    source: str = "panel",
    label: str = "train",
) -> dict[str, Any]:
    """Train the CNN on ``panel`` up to ``until`` into an in-memory artifact (no test hold-out).

    The panel is cut at ``until`` before anything is computed, so no input,
    target or heatmap spec can see a later day. The ready rows (every target
    known) are split chronologically: the last ``val_fraction`` (at least 50
    rows) stop the training early, the rows before them, less a purge of
    ``max(config.horizons)`` rows, train. Unlike :func:`train` nothing is
    held out for testing: this is the yearly refit of :func:`walk_forward_yearly`.

    Parameters
    ----------
    panel : Panel
    until : date-like, optional
        Last day of data the model may see (default: the panel's last day).
    config : CnnConfig, optional
        Hyperparameters (default ``CnnConfig()``, the shipped recipe).
    weights : sequence of float, optional
        Weights of the portfolio series used in training (default equal).
    seed : int, default=0
    val_fraction : float, default=0.15
    init_state : mapping, optional
        Warm start from these network weights.
    threads : int, default=2
        ``torch.set_num_threads`` while training (restored afterwards).
    progress : bool, default=False
        A rich progress bar.
    source : str
        Description of the data, stored in the artifact.
    label : str
        Progress bar label.

    Returns
    -------
    dict
        The artifact (:func:`models.cnn.make_artifact`), loadable by
        :class:`~models.cnn_var.CnnVaR`; ``period`` holds the training and
        validation days, ``last_target`` (the last day any target reached)
        and ``until`` (the last day of the cut panel).

    Raises
    ------
    DataError
        With fewer than 300 ready rows before ``until``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    cfg = config or CnnConfig()
    cut = panel if until is None else panel.between(None, until)
    if cut.n_days == 0:
        raise DataError(f"no data on or before {until} to train the CNN")
    prep = prepare(cut, cfg, weights)
    rows = np.flatnonzero(np.all(np.isfinite(prep.target), axis=(1, 2)))
    if rows.size < 300:
        raise DataError(
            f"only {rows.size} ready days up to {cut.dates[-1]} to train the CNN; need 300"
        )
    max_h = max(cfg.horizons)
    n_val = max(round(val_fraction * rows.size), 50)
    train_rows = rows[: rows.size - n_val - max_h]
    val_rows = rows[rows.size - n_val :]
    last_bar = int(prep.inputs.bar_index[val_rows[-1]]) + max_h
    artifact, result = _fit_artifact_rows(
        prep,
        train_rows,
        val_rows,
        last_target=str(cut.dates[min(last_bar, cut.n_days - 1)]),
        model_version=f"{VERSION}+{cut.dates[-1]}.s{int(seed)}",
        seed=seed,
        threads=threads,
        progress=progress,
        label=label,
        source=source,
        init_state=init_state,
    )
    artifact["best_val_loss"] = float(result.best_val_loss)
    artifact["warm_start"] = init_state is not None
    return artifact


def walk_forward_yearly(
    panel: Panel,
    weights: Sequence[float] | NDArray[np.float64],
    years: Sequence[int],
    train_kwargs: Mapping[str, Any] | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    warm_days: int = 750,
    on_year: Callable[[int, dict[str, Any], WalkForwardResult], None] | None = None,
) -> WalkForwardResult:
    """Out-of-sample ``cnn`` VaR/ES forecasts, retraining the network before each test year.

    For test year ``Y`` the network is trained by :func:`fit_artifact` on
    ``panel`` cut at ``Y-1``-12-31, then :func:`models.walkforward.walk_forward`
    runs a fresh :class:`~models.cnn_var.CnnVaR` over ``Y``, fed from
    ``warm_days`` returns before it. Same shape as
    :func:`stream_app.train_lstm_copula.walk_forward_yearly`.

    Parameters
    ----------
    panel : Panel
        The evaluation panel (also the training data).
    weights : array-like of shape (panel.n_assets,)
        The portfolio (also the portfolio series the network trains on).
    years : sequence of int
        Test years, increasing.
    train_kwargs : mapping, optional
        For :func:`fit_artifact` (``config``, ``seed``, ``threads``,
        ``val_fraction``, ``progress``, ``source``), plus ``max_epochs``
        (overrides ``config.max_epochs``), ``warm_start`` (bool: start each
        year from the previous year's weights) and ``warm_start_epochs``
        (int, default 4: the epochs of a warm year unless ``max_epochs`` is given).
    model_kwargs : mapping, optional
        For :class:`~models.cnn_var.CnnVaR` (``method``, ``window``, ...).
    warm_days : int, default=750
        Returns fed before each year (the model needs ``config.warmup +
        min_standardized`` of them for its first forecast).
    on_year : callable, optional
        Called with ``(year, artifact, result)`` after each year.

    Returns
    -------
    WalkForwardResult
        The years' results concatenated (``model = "cnn"``).
    """
    tk = dict(train_kwargs or {})
    warm = bool(tk.pop("warm_start", False))
    warm_epochs = int(tk.pop("warm_start_epochs", 4))
    max_epochs = tk.pop("max_epochs", None)
    cfg = tk.pop("config", None) or CnnConfig()
    if max_epochs is not None:
        cfg = replace(cfg, max_epochs=int(max_epochs))
    mk = dict(model_kwargs or {})
    w = np.asarray(weights, dtype=float)

    def fit_year(year: int, until: np.datetime64, prev: dict[str, Any] | None) -> dict[str, Any]:
        year_cfg = cfg
        init = None
        if warm and prev is not None:
            init = prev["state_dict"]
            if max_epochs is None:
                year_cfg = replace(cfg, max_epochs=warm_epochs)
        return fit_artifact(
            panel,
            until,
            config=year_cfg,
            weights=w.tolist(),
            init_state=init,
            label=f"<{year}",
            **tk,
        )

    return walk_forward_retrained(
        panel,
        years,
        fit_year,
        lambda art: CnnVaR(w, art, **mk),
        warm_days=warm_days,
        on_year=on_year,
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _overrides(spec: str) -> dict[str, Any]:
    """``"skip=none,har_inputs=false,channels=self+cross"`` -> CnnConfig keyword arguments.

    Examples
    --------
    >>> _overrides("pool_size=2,har_inputs=false,channels=self+cross,dropout=0.3")
    {'pool_size': 2, 'har_inputs': False, 'channels': ('self', 'cross'), 'dropout': 0.3}
    """
    out: dict[str, Any] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        key, _, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        value: Any
        if "+" in raw:
            parts = raw.split("+")
            value = tuple(int(v) if v.isdigit() else v for v in parts)
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_app.train_cnn",
        description="Train / evaluate the heatmap CNN volatility model.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and write an artifact")
    t.add_argument("--data", default="shipped", help="'shipped' (default) or a CSV folder")
    t.add_argument(
        "--until", type=parse_day, default=None, help="last day of training data (YYYY-MM-DD)"
    )
    t.add_argument("--horizons", default="1,5,10")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--epochs", type=int, default=None, help="max epochs (default 12)")
    t.add_argument("--set", default="", help="CnnConfig overrides, e.g. 'skip=none,pool_size=2'")
    t.add_argument("--out", default=None, help=f"output folder (default {ARTIFACT_DIR})")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("evaluate", help="out-of-sample scores vs HAR-RV, EWMA, GARCH, ...")
    e.add_argument("--data", default="shipped")
    e.add_argument("--years", default="2008,2012-2023")
    e.add_argument("--retrain", choices=("yearly", "none"), default="yearly")
    e.add_argument("--artifact", default=None, help="artifact for --retrain none")
    e.add_argument("--models", default=",".join(EVAL_MODELS))
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--set", default="", help="CnnConfig overrides, e.g. 'skip=none,pool_size=2'")
    e.add_argument("--warm-epochs", type=int, default=4, help="0: retrain from scratch each year")
    e.add_argument(
        "--extra-shipped",
        action="store_true",
        help="the yearly networks also train on the shipped history, cut before each "
        "year's validation period (with --data DIR)",
    )
    e.add_argument("--out", default="runs/cnn-eval")
    e.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    panel = load_panel(args.data)
    overrides = _overrides(args.set)
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    cfg = CnnConfig(**overrides)
    if args.cmd == "train":
        path = train(
            panel,
            args.until,
            horizon=[int(h) for h in args.horizons.split(",")],
            seed=args.seed,
            out_dir=args.out,
            progress=not args.no_progress,
            config=cfg,
            threads=args.threads,
            source=args.data,
        )
        art = load(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB), {art['period']}")
        print(json.dumps(art["metrics"], indent=1))
        return 0
    report = evaluate(
        panel,
        years=args.years,
        retrain=args.retrain,
        artifact=load(args.artifact) if args.retrain == "none" else None,
        config=cfg,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        seed=args.seed,
        threads=args.threads,
        warm_epochs=None if args.warm_epochs == 0 else args.warm_epochs,
        out_dir=args.out,
        progress=not args.no_progress,
        extra=[load_panel(None)] if args.extra_shipped and args.data != "shipped" else [],
    )
    for h in report["setup"]["horizons"]:
        print(f"\nh = {h} days")
        print(format_scores(report, h))
    print(f"\nwrote {args.out}/evaluation.json and evaluation.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ARTIFACT_DIR",
    "EVAL_MODELS",
    "VERSION",
    "ArtifactError",
    "DefaultCnnVaR",
    "Prepared",
    "default_artifact_path",
    "evaluate",
    "fit_artifact",
    "format_scores",
    "load",
    "main",
    "prepare",
    "split_rows",
    "train",
    "walk_forward_yearly",
]

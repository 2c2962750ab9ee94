"""Train the LSTM marginals of ``lstm_copula``, save/load the artifact, evaluate walk-forward.

The artifact is a ``torch.save`` of a dict holding only tensors and plain
types (str, int, float, list, dict), so it loads with
``torch.load(path, weights_only=True)``: loading never executes code.

    python -m stream_app.train_lstm_copula                       # the shipped artifact
    python -m stream_app.train_lstm_copula --data ../shared/data/daily --until 2019-12-31 \\
        --out runs/lstm
    python -m stream_app.train_lstm_copula --walk-forward 2007-2023 \\
        --data ../shared/data/daily --extra-shipped --warm-start --warm-epochs 5 --stride 2 \\
        --save-forecasts runs/lstm_wf.npz
    # the same without lstm_copula's online corrections (the network and copula alone)
    python -m stream_app.train_lstm_copula --walk-forward 2007-2023 \\
        --data ../shared/data/daily --extra-shipped --warm-start --warm-epochs 5 --stride 2 \\
        --scale-half-life 0 --recal-window 0

The shipped default (:func:`default_artifact_path`) is trained only on the
history the package ships (``producers.history.load_history(None)``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from models.lstm_copula import LstmCopula
from models.lstm_marginals import (
    ARTIFACT_FORMAT,
    PARAM_NAMES,
    LstmArtifact,
    MarginalConfig,
    NumpyMarginals,
    WindowData,
    fit_marginals,
    make_windows,
    split_t_logpdf,
    split_t_ppf,
    student_t_logpdf,
)
from models.panel import Panel
from models.walkforward import WalkForwardResult
from stream_app.train_common import (
    ARTIFACT_DIR,
    load_panel,
    parse_day,
    parse_years,
    rich_progress,
    walk_forward_retrained,
    write_artifact,
)

#: Version of the training recipe; part of every artifact's ``model_version``.
RECIPE_VERSION = "v1"
DEFAULT_ARTIFACT_NAME = f"lstm_copula-{RECIPE_VERSION}.pt"

#: Training hyperparameters of the shipped artifact (and the walk-forward default).
DEFAULT_FIT: dict[str, Any] = {
    "max_epochs": 30,
    "batch_size": 512,
    "learning_rate": 2e-3,
    "patience": 4,
    "num_threads": 1,
}


class ArtifactError(ValueError):
    """A file that is not a usable lstm_copula artifact."""


def default_artifact_path() -> Path:
    """The artifact shipped with the package (trained on the shipped history only)."""
    return ARTIFACT_DIR / DEFAULT_ARTIFACT_NAME


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def panel_windows(
    panel: Panel,
    config: MarginalConfig,
    until: np.datetime64 | str | None = None,
) -> tuple[WindowData, NDArray[np.datetime64]]:
    """Training windows of a panel whose *target* day is on or before ``until``.

    Returns
    -------
    windows : WindowData
    target_dates : ndarray of datetime64[D] of shape (n_windows,)
    """
    p = panel if until is None else panel.between(None, until)
    r = p.log_returns()
    dates = p.dates[1:]
    assert p.filled is not None  # set by Panel.__post_init__
    valid = ~p.filled[1:]
    if r.shape[0] <= config.min_obs + 1:
        raise ValueError(
            f"panel has {r.shape[0]} returns up to {until}; need more than {config.min_obs + 1}"
        )
    w = make_windows(r, config, valid_target=valid)
    return w, dates[w.t_index + 1]


def split_windows(
    windows: WindowData, target_dates: NDArray[np.datetime64], val_fraction: float
) -> tuple[WindowData, WindowData]:
    """Chronological split: the last ``val_fraction`` of the target dates validate."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    uniq = np.unique(target_dates)
    cut = uniq[min(uniq.size - 1, math.floor((1.0 - val_fraction) * uniq.size))]
    is_val = target_dates >= cut
    return windows.subset(~is_val), windows.subset(is_val)


def training_data(
    panels: Sequence[Panel],
    config: MarginalConfig,
    until: np.datetime64 | str | None,
    val_fraction: float,
    stride: int = 1,
) -> tuple[WindowData, WindowData, dict[str, Any]]:
    """Train/validation windows from several panels (each split chronologically).

    ``stride > 1`` keeps every ``stride``-th day's training windows (overlapping
    windows are redundant; this cuts training time), validation stays whole.
    """
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    trains, vals = [], []
    first: list[str] = []
    last: list[str] = []
    assets: list[str] = []
    for p in panels:
        w, td = panel_windows(p, config, until)
        tr, va = split_windows(w, td, val_fraction)
        if stride > 1:
            tr = tr.subset(tr.t_index % int(stride) == 0)
        trains.append(tr)
        vals.append(va)
        first.append(str(td.min()))
        last.append(str(td.max()))
        assets.extend(p.assets)
    info = {
        "first_target": min(first),
        "last_target": max(last),
        "assets": list(dict.fromkeys(assets)),
    }
    return WindowData.concatenate(trains), WindowData.concatenate(vals), info


# ----------------------------------------------------------------------------------------------
# Validation metrics
# ----------------------------------------------------------------------------------------------


def validation_metrics(net: NumpyMarginals, train: WindowData, val: WindowData) -> dict[str, float]:
    """Out-of-sample quality of the marginals on the validation windows.

    ``val_nll``: mean NLL of the standardised targets; ``val_nll_static_t``:
    the same for one Student-t fitted by ML to the training targets (the
    EWMA-t benchmark the LSTM must beat); ``val_hit_01``/``val_hit_05``:
    frequency of targets below the predicted 1 % / 5 % quantile.
    """
    seq = val.seq.astype(np.float64)
    mu, s_left, s_right, nu = net.predict(seq, val.static)
    nll = -split_t_logpdf(val.target, mu, s_left, s_right, nu).mean()
    sub = train.target[:: max(1, train.n_windows // 20000)]
    df, _, sc = stats.t.fit(sub, floc=0.0)
    nll_t = -student_t_logpdf(val.target, 0.0, sc, df).mean()
    hits = {}
    for a in (0.01, 0.05):
        q = split_t_ppf(a, mu, s_left, s_right, nu)
        hits[a] = float(np.mean(val.target < q))
    return {
        "val_nll": float(nll),
        "val_nll_static_t": float(nll_t),
        "val_hit_01": hits[0.01],
        "val_hit_05": hits[0.05],
        "val_windows": int(val.n_windows),
        "train_windows": int(train.n_windows),
    }


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _rich_progress(label: str) -> tuple[Callable[[int, int, float, float], None], Any]:
    bar = rich_progress(
        "[bold]{task.description}", "epoch {task.completed}/{task.total}", "{task.fields[msg]}"
    )
    task = bar.add_task(label, total=1, msg="")

    def callback(epoch: int, total: int, train_nll: float, val_nll: float) -> None:
        bar.update(
            task,
            completed=epoch,
            total=total,
            msg=f"train nll {train_nll:.4f}  val nll {val_nll:.4f}",
        )

    return callback, bar


def fit_artifact(
    panels: Sequence[Panel],
    until: np.datetime64 | str | None = None,
    *,
    seed: int = 0,
    config: MarginalConfig | None = None,
    val_fraction: float = 0.2,
    stride: int = 1,
    init: LstmArtifact | None = None,
    progress: bool | Callable[[int, int, float, float], None] = False,
    label: str = "lstm marginals",
    **fit_kwargs: Any,
) -> LstmArtifact:
    """Train the marginals on ``panels`` (targets up to ``until``) into an in-memory artifact.

    Parameters
    ----------
    panels : sequence of Panel
        Histories to learn from (any assets; the weights are shared).
    until : date-like, optional
        Last target date used (inclusive); default: all data.
    seed : int
    config : MarginalConfig, optional
        Architecture; default ``MarginalConfig()`` (or ``init``'s).
    val_fraction : float
        Chronological validation share of each panel's dates.
    stride : int
        Keep every ``stride``-th day of training windows (see :func:`training_data`).
    init : LstmArtifact, optional
        Warm start from these weights (keeps their feature standardisation).
    progress : bool or callable
        A rich progress bar (True) or an epoch callback.
    **fit_kwargs
        Passed to :func:`models.lstm_marginals.fit_marginals` (``max_epochs``,
        ``learning_rate``, ...); defaults in :data:`DEFAULT_FIT`.
    """
    if config is None:
        config = init.config if init is not None else MarginalConfig()
    kwargs = {**DEFAULT_FIT, **fit_kwargs}
    t0 = time.perf_counter()
    train, val, info = training_data(panels, config, until, val_fraction, stride)
    bar = None
    callback: Callable[[int, int, float, float], None] | None
    if progress is True:
        callback, bar = _rich_progress(label)
        bar.start()
    else:
        callback = progress or None
    try:
        res = fit_marginals(
            train,
            val,
            config,
            seed=seed,
            init_weights=None if init is None else init.weights,
            progress=callback,
            **kwargs,
        )
    finally:
        if bar is not None:
            bar.stop()
    net = NumpyMarginals(res.config, res.weights)
    metrics = validation_metrics(net, train, val)
    last = info["last_target"]
    metadata: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "trained_from": info["first_target"],
        "trained_until": last,
        "until": None if until is None else str(np.datetime64(str(until), "D")),
        "assets": info["assets"],
        "seed": int(seed),
        "epochs_run": len(res.val_nll),
        "best_epoch": res.best_epoch,
        "val_nll_history": [float(v) for v in res.val_nll],
        "train_nll_history": [float(v) for v in res.train_nll],
        "initial_val_nll": float(res.baseline_val_nll),
        "warm_start": init is not None,
        "fit": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in kwargs.items()},
        "val_fraction": float(val_fraction),
        "stride": int(stride),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "torch": str(torch.__version__),
        **metrics,
    }
    version = f"lstm_copula-{RECIPE_VERSION}+{last}.s{int(seed)}"
    return LstmArtifact(res.config, res.weights, version, metadata)


def to_payload(artifact: LstmArtifact) -> dict[str, Any]:
    """The artifact as a dict of tensors and plain types (safe for ``weights_only`` loading)."""
    return {
        "format": ARTIFACT_FORMAT,
        "model_version": artifact.model_version,
        "config": artifact.config.to_dict(),
        "state_dict": {k: torch.from_numpy(np.array(artifact.weights[k])) for k in PARAM_NAMES},
        "metadata": artifact.metadata,
    }


def from_payload(payload: Mapping[str, Any]) -> LstmArtifact:
    """Inverse of :func:`to_payload`; raises :class:`ArtifactError` on anything else."""
    if not isinstance(payload, Mapping) or payload.get("format") != ARTIFACT_FORMAT:
        got = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise ArtifactError(f"not an lstm_copula artifact (format {got!r}, need {ARTIFACT_FORMAT})")
    try:
        config = MarginalConfig.from_dict(payload["config"])
        sd = payload["state_dict"]
        weights = {k: sd[k].detach().cpu().numpy().astype(np.float32) for k in PARAM_NAMES}
        return LstmArtifact(
            config, weights, str(payload["model_version"]), dict(payload.get("metadata", {}))
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"malformed lstm_copula artifact: {exc}") from exc


def save(artifact: LstmArtifact, path: str | Path) -> Path:
    """Write ``artifact`` to ``path`` with ``torch.save``; returns the path."""
    return write_artifact(to_payload(artifact), path)


def load(path: str | Path | None = None) -> LstmArtifact:
    """Load an artifact without executing code (``torch.load(..., weights_only=True)``).

    Parameters
    ----------
    path : str or Path, optional
        Default: :func:`default_artifact_path`.
    """
    p = default_artifact_path() if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no lstm_copula artifact at {p}")
    try:
        payload = torch.load(p, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle/zip errors come in many types
        raise ArtifactError(f"cannot read {p} as a weights-only torch file: {exc}") from exc
    return from_payload(payload)


def train(
    panel: Panel,
    until: np.datetime64 | str | None = None,
    *,
    seed: int = 0,
    out_dir: str | Path = ARTIFACT_DIR,
    progress: bool = True,
    extra_panels: Sequence[Panel] = (),
    filename: str | None = None,
    **kwargs: Any,
) -> Path:
    """Train on ``panel`` (and ``extra_panels``) up to ``until`` and write a versioned artifact.

    Returns
    -------
    Path
        ``out_dir / filename`` (default ``lstm_copula-v1.pt``).
    """
    art = fit_artifact([panel, *extra_panels], until, seed=seed, progress=progress, **kwargs)
    return save(art, Path(out_dir) / (filename or DEFAULT_ARTIFACT_NAME))


# ----------------------------------------------------------------------------------------------
# Walk-forward with yearly retraining
# ----------------------------------------------------------------------------------------------


def walk_forward_yearly(
    panel: Panel,
    weights: ArrayLike,
    years: Sequence[int],
    train_kwargs: Mapping[str, Any] | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    warm_days: int = 750,
    on_year: Callable[[int, LstmArtifact, WalkForwardResult], None] | None = None,
) -> WalkForwardResult:
    """Out-of-sample ``lstm_copula`` forecasts, retraining before each test year.

    For test year ``Y`` the marginals are trained only on data dated before
    ``Y`` (``panel`` and any ``train_kwargs["extra_panels"]``, each cut at
    ``Y-1``-12-31), then :func:`models.walkforward.walk_forward` runs a fresh
    :class:`~models.lstm_copula.LstmCopula` over ``Y``, fed from ``warm_days``
    returns before it.

    Parameters
    ----------
    panel : Panel
        The evaluation panel.
    weights : array-like of shape (panel.n_assets,)
    years : sequence of int
        Test years, increasing.
    train_kwargs : mapping, optional
        For :func:`fit_artifact`, plus ``extra_panels`` (sequence of Panel),
        ``warm_start`` (bool: start each year from the previous year's weights)
        and ``warm_start_epochs`` (int, default 8).
    model_kwargs : mapping, optional
        For :class:`~models.lstm_copula.LstmCopula` (``n_scenarios``, ``seed``, ...).
    on_year : callable, optional
        Called with ``(year, artifact, result)`` after each year.

    Returns
    -------
    WalkForwardResult
        The years' results concatenated (``model = "lstm_copula"``).
    """
    tk = dict(train_kwargs or {})
    extra = list(tk.pop("extra_panels", ()))
    warm = bool(tk.pop("warm_start", False))
    warm_epochs = int(tk.pop("warm_start_epochs", 8))
    mk = dict(model_kwargs or {})

    def fit_year(year: int, until: np.datetime64, prev: LstmArtifact | None) -> LstmArtifact:
        kw = dict(tk)
        if warm and prev is not None:
            kw["init"] = prev
            kw.setdefault("max_epochs", warm_epochs)
        return fit_artifact([panel, *extra], until, label=f"train <{year}", **kw)

    return walk_forward_retrained(
        panel,
        years,
        fit_year,
        lambda art: LstmCopula(weights, art, **mk),
        warm_days=warm_days,
        on_year=on_year,
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stream_app.train_lstm_copula",
        description="Train the LSTM marginals of lstm_copula (default: the shipped artifact "
        "from the shipped history), or run a yearly-retrained walk-forward.",
    )
    ap.add_argument("--data", default=None, help="CSV folder (default: the shipped history)")
    ap.add_argument(
        "--until", type=parse_day, default=None, help="last target date used for training"
    )
    ap.add_argument("--out", default=str(ARTIFACT_DIR), help="output folder of the artifact")
    ap.add_argument("--name", default=None, help=f"file name (default {DEFAULT_ARTIFACT_NAME})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=DEFAULT_FIT["max_epochs"])
    ap.add_argument("--threads", type=int, default=DEFAULT_FIT["num_threads"])
    ap.add_argument("--walk-forward", default=None, metavar="YEARS", help="e.g. 2007-2023")
    ap.add_argument(
        "--extra-shipped",
        action="store_true",
        help="walk-forward: also train on the shipped history before each test year",
    )
    ap.add_argument("--warm-start", action="store_true", help="walk-forward: warm-start yearly")
    ap.add_argument("--warm-epochs", type=int, default=8, help="walk-forward: epochs when warm")
    ap.add_argument("--stride", type=int, default=1, help="keep every n-th day of train windows")
    ap.add_argument("--scenarios", type=int, default=20_000)
    ap.add_argument(
        "--scale-half-life",
        type=float,
        default=10.0,
        help="walk-forward: half-life in days of lstm_copula's online PIT scale correction "
        "(0: off, the network's scales as they are)",
    )
    ap.add_argument(
        "--recal-window",
        type=int,
        default=500,
        help="walk-forward: past portfolio PITs of lstm_copula's online tail recalibration "
        "(0: off, VaR/ES read at the nominal levels)",
    )
    ap.add_argument("--save-forecasts", default=None, help="walk-forward: write an .npz here")
    args = ap.parse_args(argv)
    panel = load_panel(args.data)
    fit_kw = {"max_epochs": args.epochs, "num_threads": args.threads, "stride": args.stride}
    if args.walk_forward is None:
        path = train(
            panel,
            args.until,
            seed=args.seed,
            out_dir=args.out,
            filename=args.name,
            **fit_kw,
        )
        art = load(path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB), {art.model_version}")
        for k in ("trained_from", "trained_until", "epochs_run", "best_epoch", "train_seconds"):
            print(f"  {k}: {art.metadata[k]}")
        for k in ("val_nll", "val_nll_static_t", "val_hit_01", "val_hit_05"):
            print(f"  {k}: {art.metadata[k]:.4f}")
        return 0

    from models.backtest import score

    extra = [load_panel(None)] if args.extra_shipped else []
    w = np.full(panel.n_assets, 1.0 / panel.n_assets)

    def on_year(year: int, art: LstmArtifact, res: WalkForwardResult) -> None:
        hits = (res.realized[:, None] < -res.var).sum(axis=0)
        print(
            f"{year}: {res.n_forecasts} days, exceptions 95/97.5/99 = {hits.tolist()}, "
            f"val_nll {art.metadata['val_nll']:.4f} (static t {art.metadata['val_nll_static_t']:.4f}), "
            f"{art.metadata['train_seconds']:.0f}s",
            flush=True,
        )

    res = walk_forward_yearly(
        panel,
        w,
        parse_years(args.walk_forward),
        {
            **fit_kw,
            "extra_panels": extra,
            "seed": args.seed,
            "warm_start": args.warm_start,
            "warm_start_epochs": args.warm_epochs,
        },
        model_kwargs={
            "n_scenarios": args.scenarios,
            "seed": args.seed,
            "scale_half_life": args.scale_half_life if args.scale_half_life > 0 else None,
            "recal_window": args.recal_window if args.recal_window > 0 else None,
        },
        on_year=on_year,
    )
    if args.save_forecasts:
        np.savez(
            args.save_forecasts,
            dates=res.dates.astype(str),
            realized=res.realized,
            var=res.var,
            es=res.es,
        )
    summary = score(res.realized, res.var, res.es, res.levels, res.dates)
    for k, v in summary.to_dict().items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

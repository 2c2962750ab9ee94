"""Cost of the heatmap CNN per day, on one core, against HAR-RV and EWMA in the same run.

Timed per day (mean / p50 / p99 over ``--days`` days, after a warm-up):

- ``cnn var``: ``CnnVaR.update()`` + ``predict()``: features of every asset and
  the portfolio, the portfolio heatmap + cross-section, one network forward,
  the FHS quantiles. This is what ``riskmon backtest --models cnn`` and the
  stream pay per day; the network runs once whatever the number of assets.
- ``cnn forward``: the network alone on one 3x32x32 image.
- ``cnn all series``: per-asset volatility forecasts for the whole book
  (n_assets + 1 images in one batch), for per-asset dashboards.
- ``har-rv``: a HAR-RV one-day prediction for every series from a running
  22-day buffer of squared returns (the baseline of the ratio column).
- ``ewma var``: ``models.ewma.RiskMetricsEWMA`` update + predict.

Uses the shipped artifact when it exists (else an untrained network on fitted
specs: the cost is the same). Returns are synthetic (seeded): cost does not
depend on the values.

    python bench/bench_cnn.py [--assets 10,100] [--days 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from models.cnn import CnnConfig, VolCNN, build_inputs, fit_specs, make_artifact
from models.cnn_var import CnnVaR
from models.vol_baselines import HarRV
from stream_app.train_cnn import default_artifact_path, load


def _artifact() -> tuple[dict, str]:
    path = default_artifact_path()
    if path.is_file():
        return load(path), f"artifact {path.name}"
    cfg = CnnConfig()
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, size=(400, 5))
    inp = build_inputs(np.full(5, 0.2), cfg, log_returns=r)
    specs = fit_specs(inp.windows, 5, cfg)
    torch.manual_seed(0)
    net = VolCNN(len(cfg.channels), cfg.n_extra, len(cfg.horizons), cfg)
    return make_artifact(cfg, specs, net.state_dict(), version="bench"), "untrained network"


def _time(fn: Callable[[int], None], days: int) -> np.ndarray:
    out = np.empty(days)
    for i in range(days):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def _row(name: str, ms: np.ndarray, base: float) -> str:
    return (
        f"{name:<22}{ms.mean():>10.3f}{np.median(ms):>10.3f}{np.percentile(ms, 99):>10.3f}"
        f"{np.median(ms) / base:>10.1f}"
    )


def _bench_book(n_assets: int, artifact: dict, cfg: CnnConfig, days: int) -> None:
    rng = np.random.default_rng(42)
    warm = cfg.warmup + 150
    r = rng.standard_t(5, size=(warm + days, n_assets)) * 0.01
    w = np.full(n_assets, 1.0 / n_assets)
    print(f"\n{n_assets} assets")
    print(f"{'':<22}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'p50/har':>10}")

    # baseline: HAR-RV one-day prediction for every series from a running buffer
    har = HarRV(1).fit(r[:warm], until=warm)
    buf = list(r[warm - 22 : warm] ** 2)
    coef = har.coef_

    def har_step(i: int) -> None:
        buf.pop(0)
        buf.append(r[warm + i] ** 2)
        sq = np.asarray(buf)
        x = np.stack([sq[-1], sq[-5:].mean(axis=0), sq.mean(axis=0)], axis=1)
        np.sqrt(np.maximum(coef[:, 0] + np.einsum("sk,sk->s", x, coef[:, 1:]), har.floor_))

    base_ms = _time(har_step, days)
    base = float(np.median(base_ms))
    print(_row("har-rv", base_ms, base))

    from models.ewma import RiskMetricsEWMA

    ew = RiskMetricsEWMA(w).fit(r[:warm])

    def ewma_step(i: int) -> None:
        ew.predict()
        ew.update(r[warm + i])

    print(_row("ewma var", _time(ewma_step, days), base))

    model = CnnVaR(w, artifact).fit(r[:warm])

    def cnn_step(i: int) -> None:
        model.predict()
        model.update(r[warm + i])

    print(_row("cnn var (update+pred)", _time(cnn_step, days), base))

    f = model.forecaster
    windows, har_in, scale = model._inputs.inputs()
    img = torch.rand(1, len(cfg.channels), cfg.image_size, cfg.image_size).contiguous(
        memory_format=torch.channels_last
    )
    extra = torch.from_numpy(har_in[-1:].astype(np.float32))

    def forward(_: int) -> None:
        with torch.inference_mode():
            f.net(img, extra)

    print(_row("cnn forward (1 image)", _time(forward, days), base))

    def all_series(_: int) -> None:
        f.predict_vol(windows[None], har_in[None], scale[None])

    print(_row(f"cnn all {n_assets + 1} series", _time(all_series, max(days // 5, 20)), base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default="10,100")
    ap.add_argument("--days", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    artifact, what = _artifact()
    cfg = CnnConfig.from_dict(artifact["config"])
    print(f"{what}; torch threads {torch.get_num_threads()}; {args.days} timed days")
    for n_assets in (int(a) for a in args.assets.split(",")):
        _bench_book(n_assets, artifact, cfg, args.days)


if __name__ == "__main__":
    main()

"""CNN training driver: artifact round trip (weights_only), splits, evaluation report."""

import json

import numpy as np
import pytest
import torch

from models.cnn import CnnConfig, VolForecaster
from models.cnn_var import CnnVaR
from models.panel import Panel
from stream_app import train_cnn
from stream_app.train_cnn import (
    ArtifactError,
    DefaultCnnVaR,
    evaluate,
    format_scores,
    load,
    prepare,
    split_rows,
    train,
)

TINY = CnnConfig(
    warmup=30, max_epochs=1, samples_per_epoch=64, val_samples=64, batch_size=32, patience=1
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(42)
    n, a = 820, 3
    s2 = np.full(a, 1e-4)
    r = np.empty((n, a))
    for t in range(n):
        r[t] = rng.standard_normal(a) * np.sqrt(s2)
        s2 = 5e-6 + 0.1 * r[t] ** 2 + 0.85 * s2
    close = 50.0 * np.exp(np.cumsum(r, axis=0))
    dates = np.busday_offset("2010-01-04", np.arange(n), roll="forward")
    return Panel(
        dates, ("A", "B", "C"), close, close * 1.01, close * 0.99, close, np.full((n, a), 1e5)
    )


@pytest.fixture(scope="module")
def trained(panel, tmp_path_factory):
    """One tiny artifact trained on the panel up to 2011-12-30, shared by the tests."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cnn")
    path = train(
        panel, "2011-12-30", horizon=(1, 5, 10), seed=3, out_dir=out, progress=False,
        config=TINY, threads=1, source="synthetic",
    )  # fmt: skip
    torch.set_num_threads(old)
    return path


def test_split_rows_is_chronological_and_purged():
    valid = np.ones(1000, dtype=bool)
    valid[-10:] = False  # no target yet
    tr, va, te = split_rows(valid, purge=10)
    assert tr[-1] + 10 < va[0] and va[-1] + 10 < te[0]
    assert te[-1] == 989
    assert abs(tr.size + 10 - 0.70 * 990) <= 1 and abs(te.size - 0.15 * 990) <= 1


def test_train_writes_a_weights_only_artifact(trained):
    path = trained
    assert path.name == f"{train_cnn.VERSION}.pt"
    assert path.stat().st_size < 5e6
    raw = torch.load(path, weights_only=True)  # no code runs on load
    assert raw["version"] == train_cnn.VERSION and raw["format"] == 1
    assert raw["config"]["horizons"] == [1, 5, 10]
    assert raw["period"]["until"] <= "2011-12-30"
    assert raw["period"]["train"][1] < raw["period"]["val"][0] < raw["period"]["test"][0]
    assert set(raw["metrics"]) == {"val", "test"}
    assert "assets_qlike" in raw["metrics"]["val"]["h10"]
    assert raw["specs"]["series"]["fitted"]["n_features_in"] == 8
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    f = VolForecaster.from_artifact(load(path))
    assert f.config.horizons == (1, 5, 10)


def test_fit_artifact_holds_no_test_part_and_records_the_refit(panel):
    art = train_cnn.fit_artifact(panel, "2011-12-30", config=TINY, seed=2, threads=1)
    assert list(art["period"]) == ["first_day", "train", "val", "last_target", "until"]
    p = art["period"]
    assert p["train"][1] < p["val"][0] <= p["val"][1] <= p["last_target"] <= p["until"]
    assert p["until"] <= "2011-12-30"
    assert set(art["metrics"]) == {"val"}
    assert art["model_version"] == f"{train_cnn.VERSION}+{p['until']}.s2"
    assert art["best_val_loss"] == min(h["val_loss"] for h in art["history"])
    assert art["warm_start"] is False
    warm = train_cnn.fit_artifact(
        panel, "2011-12-30", config=TINY, seed=2, threads=1, init_state=art["state_dict"]
    )
    assert warm["warm_start"] is True
    assert CnnVaR([0.5, 0.3, 0.2], warm).name == "cnn"


@pytest.mark.slow
def test_train_is_deterministic_for_a_seed(panel, trained, tmp_path):
    again = train(
        panel, "2011-12-30", horizon=(1, 5, 10), seed=3, out_dir=tmp_path, progress=False,
        config=TINY, threads=1,
    )  # fmt: skip
    a = torch.load(trained, weights_only=True)["state_dict"]
    b = torch.load(again, weights_only=True)["state_dict"]
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_load_rejects_missing_and_bad_files(tmp_path):
    with pytest.raises(ArtifactError, match="no CNN artifact"):
        load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="not a loadable"):
        load(bad)
    partial = tmp_path / "partial.pt"
    torch.save({"format": 1}, partial)
    with pytest.raises(ArtifactError, match="lacks"):
        load(partial)


def test_default_cnn_var_loads_the_default_artifact(panel, trained, monkeypatch):
    monkeypatch.setattr(train_cnn, "default_artifact_path", lambda: trained)
    monkeypatch.setattr(train_cnn, "_CACHE", {})
    m = DefaultCnnVaR([0.5, 0.5], min_standardized=20)
    assert isinstance(m, CnnVaR) and m.name == "cnn"
    m.fit(np.diff(np.log(panel.close[:, :2]), axis=0)[:200])
    assert np.all(m.predict().var > 0)


def test_prepare_aligns_dates_and_targets(panel):
    prep = prepare(panel, TINY)
    assert prep.dates[0] == panel.dates[TINY.warmup]
    assert prep.target.shape == (prep.inputs.n_rows, 4, 3)
    assert np.all(np.isnan(prep.target[-1]))


def test_evaluate_yearly_writes_scores_and_forecasts(panel, tmp_path):
    rep = evaluate(
        panel,
        years=[2012],
        config=TINY,
        models=("cnn", "cnn+har", "har", "ewma", "linear"),
        horizons=(10,),
        threads=1,
        out_dir=tmp_path,
        progress=False,
    )
    assert rep["setup"]["models"] == ["cnn", "cnn+har", "har", "ewma", "linear"]
    (tr,) = rep["training"]
    assert tr["year"] == 2012 and tr["val"][1] < "2012-01-01"
    rows = [r for r in rep["scores"] if r["period"] == "2012"]
    assert {(r["group"], r["model"]) for r in rows} >= {("assets", "cnn"), ("portfolio", "har")}
    cnn = next(r for r in rows if r["model"] == "cnn" and r["group"] == "assets")
    assert 0.0 <= cnn["mz_r2"] <= 1.0 and cnn["qlike"] > 0 and "dm_qlike_p" in cnn
    assert "2012" in format_scores(rep, 10)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["setup"]["years"] == [2012]
    head = (tmp_path / "evaluation.csv").read_text().splitlines()
    assert head[0] == "date,series,horizon,realized,cnn,cnn+har,har,ewma,linear"
    assert head[1].startswith("2012-")


def test_evaluate_with_a_fixed_artifact(panel, tmp_path):
    path = train(
        panel, "2011-12-30", seed=0, out_dir=tmp_path, progress=False, config=TINY, threads=1
    )
    rep = evaluate(
        panel, years="2012", retrain="none", artifact=load(path), models=("cnn", "har"),
        horizons=(5,), threads=1, progress=False,
    )  # fmt: skip
    assert rep["training"][0]["cnn"] == "artifact"
    with pytest.raises(ValueError, match="artifact"):
        evaluate(panel, years="2012", retrain="none", progress=False)
    with pytest.raises(ValueError, match="unknown models"):
        evaluate(panel, years="2012", models=("lstm",), progress=False)


def test_backtest_writes_cnn_forecasts_like_the_baselines(panel, tmp_path, monkeypatch):
    """`riskmon backtest --models cnn` path: registry -> walk_forward -> forecasts.csv."""
    from models import registry
    from stream_app.backtest_cmd import BacktestPlan, run_models, write_forecasts
    from stream_app.portfolio import Portfolio

    path = train(
        panel, "2011-06-30", seed=0, out_dir=tmp_path, progress=False, config=TINY, threads=1
    )
    monkeypatch.setattr(train_cnn, "default_artifact_path", lambda: path)
    monkeypatch.setattr(train_cnn, "_CACHE", {})
    entry = ("stream_app.train_cnn", "DefaultCnnVaR", "heatmap CNN vol + filtered HS")
    monkeypatch.setitem(registry.MODELS, "cnn", entry)
    plan = BacktestPlan(
        panel=panel,
        portfolio=Portfolio("book", ("A", "B", "C"), (0.5, 0.3, 0.2)),
        models=("cnn", "hs"),
        start=np.datetime64("2012-01-02"),
        end=np.datetime64("2012-03-30"),
    )
    results = run_models(plan, show_progress=False)
    n = write_forecasts(tmp_path / "forecasts.csv", results)
    lines = (tmp_path / "forecasts.csv").read_text().splitlines()
    assert lines[0] == "date,model,realized,var95,var975,var99,es95,es975,es99"
    cnn_rows = [ln for ln in lines[1:] if ",cnn," in ln]
    assert len(cnn_rows) == results[0].n_forecasts > 50 and n == len(lines) - 1


def _other_panel(n_assets, first="2009-06-01", n=700, seed=7):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n, n_assets)) * 0.01
    close = 20.0 * np.exp(np.cumsum(r, axis=0))
    dates = np.busday_offset(first, np.arange(n), roll="forward")
    names = tuple(f"X{i}" for i in range(n_assets))
    return Panel(dates, names, close, close, close, close, np.full((n, n_assets), 1e5))


def test_extra_rows_end_their_targets_before_the_cut():
    x = prepare(_other_panel(5), TINY)
    cut = np.datetime64("2011-06-01")
    rows = train_cnn.extra_rows(x, cut)
    assert rows.size > 100
    last_target_day = x.panel.dates[x.inputs.bar_index[rows[-1]] + max(TINY.horizons)]
    assert last_target_day < cut
    nxt = x.panel.dates[x.inputs.bar_index[rows[-1] + 1] + max(TINY.horizons)]
    assert nxt >= cut  # every row that qualifies is taken
    assert np.isfinite(x.target[rows]).all()


def test_fit_rows_trains_on_another_panels_rows_too(panel):
    """A wider panel's rows join the training pairs (padded series never drawn);
    validation and the returned sample set stay on the main panel."""
    prep = prepare(panel, TINY)
    rows = np.flatnonzero(np.isfinite(prep.target).all(axis=(1, 2)))
    train_rows, val_rows = rows[:300], rows[320:420]
    x = prepare(_other_panel(5), TINY)
    more = train_cnn.extra_rows(x, prep.dates[val_rows[0]])
    seen = {}
    real = train_cnn.train_network

    def spy(data, train_pairs, val_pairs, config, **kw):
        seen.update(data=data, train=train_pairs, val=val_pairs)
        return real(data, train_pairs, val_pairs, config, **kw)

    import unittest.mock

    with unittest.mock.patch.object(train_cnn, "train_network", spy):
        fitted, data = train_cnn.fit_rows(prep, train_rows, val_rows, seed=1, extra=[(x, more)])
    n_main = prep.target.shape[0]
    assert seen["train"].shape[0] == 300 * 4 + more.size * 6
    assert seen["data"].series_rows.shape[:2] == (n_main + x.target.shape[0], 6)
    assert (seen["data"].portfolio[:n_main] == 3).all() and (
        seen["data"].portfolio[n_main:] == 5
    ).all()
    assert (seen["val"][:, 0] < n_main).all() and seen["val"].shape[0] == 100 * 4
    assert data.series_rows.shape[1] == 4 and fitted.result.n_train > 0
    # the network's forecasts for the main panel are finite
    out = train_cnn.predict_log_var(fitted.network(), data, train_cnn.pairs_of(val_rows, 4), TINY)
    assert np.isfinite(out).all()


def test_evaluate_trains_the_yearly_network_on_extra_panels_before_validation(panel):
    rep = evaluate(
        panel, years=[2012], config=TINY, models=("cnn", "har"), horizons=(10,), threads=1,
        progress=False, extra=[_other_panel(5), _other_panel(2, first="2013-01-01", n=300)],
    )  # fmt: skip
    (tr,) = rep["training"]
    # the second panel starts after the validation period: it adds nothing
    assert len(tr["extra_train_rows"]) == 1 and tr["extra_train_rows"][0] > 100
    assert [e["assets"] for e in rep["setup"]["extra"]] == [5, 2]

"""Training driver: windows from panels, artifact save/load (weights_only), walk-forward."""

from __future__ import annotations

import fractions
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from models.lstm_copula import LstmCopula
from models.lstm_marginals import LstmArtifact, MarginalConfig
from models.panel import Panel
from stream_app import train_lstm_copula as tlc

TINY = MarginalConfig(window=10, hidden_size=4, head_size=4, burn_in=3)
FIT = dict(max_epochs=2, batch_size=256, num_threads=1)
MODEL = dict(n_scenarios=1000, copula_window=30, copula_min_obs=15, refit_every=5)


def make_panel(rng: np.random.Generator, n_days: int, assets: tuple[str, ...], start="2001-01-01"):
    d = len(assets)
    r = 0.01 * rng.standard_t(5, size=(n_days, d))
    close = 100.0 * np.exp(np.vstack([np.zeros(d), np.cumsum(r, axis=0)]))
    dates = np.datetime64(start) + np.arange(n_days + 1)
    filled = np.zeros_like(close, dtype=bool)
    filled[100, 0] = True
    return Panel(dates, assets, close, close, close, close, np.zeros_like(close), filled=filled)


@pytest.fixture(scope="module")
def panel() -> Panel:
    return make_panel(np.random.default_rng(42), 400, ("A", "B"))


@pytest.fixture(scope="module")
def artifact(panel: Panel) -> LstmArtifact:
    return tlc.fit_artifact([panel], "2001-12-31", seed=1, config=TINY, **FIT)


def test_panel_windows_respect_until_and_filled_days(panel: Panel) -> None:
    w, td = tlc.panel_windows(panel, TINY, "2001-06-30")
    assert td.max() <= np.datetime64("2001-06-30")
    # the return of day 100 of asset A is a carried-forward price: never a target
    assert not np.any((td == panel.dates[100]) & (w.asset == 0))
    assert np.any((td == panel.dates[100]) & (w.asset == 1))
    tr, va = tlc.split_windows(w, td, 0.25)
    assert tr.n_windows + va.n_windows == w.n_windows
    train_dates = panel.dates[1:][tr.t_index + 1]
    val_dates = panel.dates[1:][va.t_index + 1]
    assert train_dates.max() < val_dates.min()
    with pytest.raises(ValueError, match="val_fraction"):
        tlc.split_windows(w, td, 1.5)


def test_stride_thins_training_windows_only(panel: Panel) -> None:
    tr1, va1, _ = tlc.training_data([panel], TINY, None, 0.2, stride=1)
    tr3, va3, _ = tlc.training_data([panel], TINY, None, 0.2, stride=3)
    assert va3.n_windows == va1.n_windows
    assert tr3.n_windows == pytest.approx(tr1.n_windows / 3, rel=0.05)


def test_artifact_metadata(artifact: LstmArtifact) -> None:
    md = artifact.metadata
    assert md["trained_until"] <= "2001-12-31"
    assert md["assets"] == ["A", "B"]
    assert md["epochs_run"] >= 1 and md["seed"] == 1
    for k in ("val_nll", "val_nll_static_t", "val_hit_01", "val_hit_05"):
        assert np.isfinite(md[k])
    assert artifact.model_version.startswith("lstm_copula-v1+")


def test_save_load_round_trip_weights_only(tmp_path: Path, panel, artifact) -> None:
    path = tlc.save(artifact, tmp_path / "a.pt")
    raw = torch.load(path, weights_only=True)  # no code runs: plain types and tensors only
    assert raw["format"] == tlc.ARTIFACT_FORMAT
    back = tlc.load(path)
    assert back.config == artifact.config
    assert back.model_version == artifact.model_version
    assert back.metadata == artifact.metadata
    for k, v in artifact.weights.items():
        np.testing.assert_array_equal(back.weights[k], v)
    r = panel.log_returns()
    w = np.array([0.4, 0.6])
    f1 = LstmCopula(w, artifact, seed=3, **MODEL).fit(r[:200]).predict()
    f2 = LstmCopula(w, back, seed=3, **MODEL).fit(r[:200]).predict()
    np.testing.assert_array_equal(f1.var, f2.var)
    np.testing.assert_array_equal(f1.es, f2.es)


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    p = tmp_path / "x.pt"
    torch.save({"format": "something-else"}, p)
    with pytest.raises(tlc.ArtifactError, match="not an lstm_copula artifact"):
        tlc.load(p)
    pickled = tmp_path / "evil.pt"
    with pickled.open("wb") as fh:
        pickle.dump(fractions.Fraction(1, 3), fh, protocol=2)  # a global outside the allow-list
    with pytest.raises(tlc.ArtifactError):
        tlc.load(pickled)
    with pytest.raises(FileNotFoundError):
        tlc.load(tmp_path / "missing.pt")


def test_artifact_applies_to_other_and_more_assets(rng, artifact) -> None:
    other = make_panel(rng, 150, tuple(f"X{i}" for i in range(30)))
    r = other.log_returns()
    f = LstmCopula(np.full(30, 1 / 30), artifact, **MODEL).fit(r).predict()
    assert np.all(np.isfinite(f.var)) and np.all(f.es >= f.var)
    three = LstmCopula(np.full(3, 1 / 3), artifact, **MODEL).fit(r[:, :3]).predict()
    assert np.all(three.var > 0)


def test_train_writes_artifact_and_is_deterministic(tmp_path: Path, panel) -> None:
    p1 = tlc.train(
        panel,
        "2001-10-31",
        seed=5,
        out_dir=tmp_path,
        progress=False,
        filename="a.pt",
        config=TINY,
        **FIT,
    )
    p2 = tlc.train(
        panel,
        "2001-10-31",
        seed=5,
        out_dir=tmp_path,
        progress=False,
        filename="b.pt",
        config=TINY,
        **FIT,
    )
    a, b = tlc.load(p1), tlc.load(p2)
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_default_artifact_is_shipped_and_small() -> None:
    path = tlc.default_artifact_path()
    assert path.is_file() and path.stat().st_size < 2 * 1024 * 1024
    art = tlc.load()
    assert art.metadata["trained_until"] <= "2022-12-31"
    # trained on the shipped history only (no evaluation-panel ETFs such as SPY, GLD)
    assert not {"SPY", "GLD", "TLT", "LQD", "USO"} & set(art.metadata["assets"])


def test_walk_forward_yearly_one_year(rng) -> None:
    panel = make_panel(rng, 500, ("A", "B"), start="2001-01-01")
    res = tlc.walk_forward_yearly(
        panel,
        np.full(2, 0.5),
        [2002],
        {"config": TINY, **FIT, "max_epochs": 1},
        model_kwargs=MODEL,
    )
    assert res.dates.min() >= np.datetime64("2002-01-01")
    assert res.n_forecasts == res.dates.size == 500 - 364


@pytest.mark.slow
def test_walk_forward_yearly_trains_before_each_year(rng) -> None:
    panel = make_panel(rng, 3 * 365, ("A", "B", "C"), start="2001-01-01")
    seen: list[tuple[int, str]] = []

    def on_year(year, art, res):
        seen.append((year, art.metadata["trained_until"]))

    res = tlc.walk_forward_yearly(
        panel,
        np.full(3, 1 / 3),
        [2002, 2003],
        {"config": TINY, **FIT, "warm_start": True},
        model_kwargs=MODEL,
        on_year=on_year,
    )
    assert [y for y, _ in seen] == [2002, 2003]
    assert all(until < f"{y}-01-01" for y, until in seen)
    assert res.model == "lstm_copula"
    assert res.dates.min() >= np.datetime64("2002-01-01")
    assert res.dates.max() <= np.datetime64("2003-12-31")
    assert res.var.shape == (res.dates.size, 3)
    assert res.n_forecasts == res.dates.size  # warmed up before each year


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ([], {"scale_half_life": 10.0, "recal_window": 500}),
        (
            ["--scale-half-life", "0", "--recal-window", "0"],
            {"scale_half_life": None, "recal_window": None},
        ),
    ],
)
def test_cli_walk_forward_passes_the_corrections(monkeypatch, panel, flag, expected) -> None:
    import producers.history

    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_walk_forward_yearly(panel, weights, years, train_kwargs, *, model_kwargs, on_year):
        seen.update(model_kwargs=model_kwargs, years=years)
        raise Stop

    monkeypatch.setattr(producers.history, "load_history", lambda data=None: panel)
    monkeypatch.setattr(tlc, "walk_forward_yearly", fake_walk_forward_yearly)
    with pytest.raises(Stop):
        tlc.main(["--walk-forward", "2001", "--scenarios", "500", *flag])
    assert seen["years"] == [2001]
    assert seen["model_kwargs"] == {"n_scenarios": 500, "seed": 0, **expected}

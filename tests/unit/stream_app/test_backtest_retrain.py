"""`riskmon backtest --retrain yearly`: deep models retrained before each year, never on it."""

import csv
import json

import numpy as np
import pytest

from models.cnn import CnnConfig
from models.lstm_marginals import MarginalConfig
from models.panel import Panel
from stream_app import backtest_cmd
from stream_app.backtest_cmd import BacktestPlan, Retrain, run_backtest
from stream_app.cli import main
from stream_app.portfolio import Portfolio

#: Tiny networks and Monte Carlo: seconds instead of minutes, same code paths.
TINY = {
    "lstm_copula": {
        "config": MarginalConfig(window=10, hidden_size=4, head_size=4, burn_in=3),
        "batch_size": 256,
        "num_threads": 1,
        "max_epochs": 2,
        "extra_shipped": False,  # tested on its own below
        "model_kwargs": {
            "n_scenarios": 500,
            "copula_window": 30,
            "copula_min_obs": 15,
            "refit_every": 5,
        },
    },
    "cnn": {
        "config": CnnConfig(
            warmup=30,
            max_epochs=2,
            samples_per_epoch=64,
            val_samples=64,
            batch_size=32,
            patience=1,
            n_filters=4,
            n_conv=1,
            fc_sizes=(8,),
        ),
        "threads": 1,
        "model_kwargs": {"min_standardized": 20, "window": 50},
    },
}
ASSETS = ("AAA", "BBB", "CCC")
WARMUP = 120  # cnn needs 30 + 20 returns, lstm_copula 13 + 15: every day of a year forecast


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_panel(seed: int = 42, n: int = 900) -> Panel:
    """GARCH-like returns of three assets on business days from 2003-01-01 (to mid 2006)."""
    rng = np.random.default_rng(seed)
    a = len(ASSETS)
    s2 = np.full(a, 1e-4)
    r = np.empty((n, a))
    for t in range(n):
        r[t] = rng.standard_t(5, a) * np.sqrt(s2 * 3 / 5)
        s2 = 5e-6 + 0.1 * r[t] ** 2 + 0.85 * s2
    close = 50.0 * np.exp(np.cumsum(r, axis=0))
    dates = np.busday_offset("2003-01-01", np.arange(n), roll="forward")
    return Panel(dates, ASSETS, close, close * 1.01, close * 0.99, close, np.full((n, a), 1e5))


def perturbed_from(panel: Panel, day: str) -> Panel:
    """``panel`` with every price from ``day`` on moved by a large random walk."""
    rng = np.random.default_rng(7)
    later = panel.dates >= np.datetime64(day)
    shock = np.ones_like(panel.close)
    shock[later] = np.exp(np.cumsum(0.05 * rng.standard_normal((later.sum(), panel.n_assets)), 0))
    p = panel
    return Panel(
        p.dates, p.assets, p.open * shock, p.high * shock, p.low * shock, p.close * shock, p.volume
    )


def plan_for(panel: Panel, models, start: str, end: str) -> BacktestPlan:
    return BacktestPlan(
        panel=panel,
        portfolio=Portfolio("book", ASSETS, (0.5, 0.3, 0.2)),
        models=tuple(models),
        start=np.datetime64(start),
        end=np.datetime64(end),
    )


def retrain_on(panel: Panel) -> Retrain:
    return Retrain("yearly", history=panel, source="synthetic", warmup_days=WARMUP, settings=TINY)


def training_only(record: dict) -> dict:
    """The per-year records without wall times."""
    return {
        year: {m: {k: v for k, v in r.items() if k != "train_seconds"} for m, r in models.items()}
        for year, models in record["years"].items()
    }


@pytest.fixture(scope="module")
def runs():
    """The same two-year backtest on the panel and on the panel with 2006 on changed."""
    panel = make_panel()
    out = {}
    for key, p in (("clean", panel), ("changed", perturbed_from(panel, "2006-01-01"))):
        plan = plan_for(p, ("hs", "lstm_copula", "cnn"), "2005-07-01", "2006-06-30")
        lines: list[str] = []
        results, record = run_backtest(plan, retrain_on(p), show_progress=False, log=lines.append)
        out[key] = (plan, results, record, lines)
    return out


def test_each_year_trains_only_on_days_before_it(runs):
    _, _, record, lines = runs["clean"]
    assert record["mode"] == "yearly" and record["data"] == "synthetic"
    assert set(record["years"]) == {"2005", "2006"}
    for year, models in record["years"].items():
        assert set(models) == {"lstm_copula", "cnn"}
        for name, rec in models.items():
            first, last = rec["trained_on"]
            # up to the end of the previous year, not one day further
            assert f"{int(year) - 1}-12-01" < last < f"{year}-01-01", (name, year, last)
            assert first < f"{int(year) - 1}-01-01"
            assert 1 <= rec["epochs"] <= 2 and np.isfinite(rec["val_value"])
            assert rec["forecast_days"] > 0
    assert record["years"]["2005"]["cnn"]["val_rows"][1] < "2005-01-01"
    assert sum(ln.startswith("retrain lstm_copula 2005: trained on 2003-") for ln in lines) == 1
    assert any(ln.startswith("retrain cnn 2006: trained on") and "val_qlike" in ln for ln in lines)


def test_changing_the_test_year_does_not_change_its_model(runs):
    """Real oracle for leakage: prices from 2006-01-01 on are rewritten; every model trained
    for 2005 and 2006 must come out bit-identical, and the 2005 forecasts too."""
    _, clean, rec_clean, _ = runs["clean"]
    _, changed, rec_changed, _ = runs["changed"]
    assert training_only(rec_clean) == training_only(rec_changed)
    for a, b in zip(clean, changed, strict=True):
        in_2005 = a.dates < np.datetime64("2006-01-01")
        np.testing.assert_array_equal(a.var[in_2005], b.var[in_2005])
        np.testing.assert_array_equal(a.es[in_2005], b.es[in_2005])
        # the test can fail: the changed 2006 data do move the 2006 forecasts
        assert not np.array_equal(a.var[~in_2005], b.var[~in_2005])


def test_results_cover_the_period_like_the_baselines(runs):
    plan, results, _, _ = runs["clean"]
    hs, lstm, cnn = results
    assert (hs.model, lstm.model, cnn.model) == ("hs", "lstm_copula", "cnn")
    for res in (lstm, cnn):
        np.testing.assert_array_equal(res.dates, hs.dates)
        np.testing.assert_allclose(res.realized, hs.realized, rtol=0, atol=1e-15)
        assert res.n_forecasts == res.dates.size  # warmed up before each year
        assert (res.var[:, 0] <= res.var[:, 2]).all() and (res.es >= res.var).all()
    assert hs.dates[0] >= plan.start and hs.dates[-1] <= plan.end


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    panel = make_panel(seed=3)
    for j, name in enumerate(panel.assets):
        with (root / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Date", "Open", "High", "Low", "Close", "Volume"])
            for d, c in zip(panel.dates, panel.close[:, j], strict=True):
                w.writerow(
                    [str(d), f"{c:.4f}", f"{c * 1.01:.4f}", f"{c * 0.99:.4f}", f"{c:.4f}", 1000]
                )
    return root


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(backtest_cmd, "RETRAIN_SETTINGS", TINY)


def test_cli_writes_deep_model_rows_for_every_day(data_dir, tmp_path, tiny, capsys):
    out = tmp_path / "run"
    period = ["--period", "2005-11-01:2006-02-28"]
    rc = main(
        ["backtest", "--data", str(data_dir), "--models", "ewma,lstm_copula,cnn", *period,
         "--warmup-days", str(WARMUP), "--retrain", "yearly", "--train-epochs", "1",
         "--train-seed", "5", "--out", str(out), "--no-progress", "--jobs", "1"]
    )  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "lstm_copula" in captured.out and "cnn" in captured.out and "Kupiec" in captured.out
    assert "retrain cnn 2006: trained on" in captured.err
    with (out / "forecasts.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    days = {m: [r["date"] for r in rows if r["model"] == m] for m in ("ewma", "lstm_copula", "cnn")}
    with (data_dir / "AAA.csv").open() as fh:
        trading = [
            r["Date"] for r in csv.DictReader(fh) if "2005-11-01" <= r["Date"] <= "2006-02-28"
        ]
    assert days["ewma"] == days["lstm_copula"] == days["cnn"] == trading
    realized = {(r["date"], r["model"]): r["realized"] for r in rows}
    assert all(
        realized[d, "cnn"] == realized[d, "ewma"] == realized[d, "lstm_copula"] for d in trading
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["ewma", "lstm_copula", "cnn"]
    rt = summary["retrain"]
    assert rt["mode"] == "yearly" and rt["data"] == str(data_dir)
    assert rt["epochs"] == 1 and rt["seed"] == 5 and rt["warmup_days"] == WARMUP
    assert set(rt["years"]) == {"2005", "2006"}
    for year, models in rt["years"].items():
        for rec in models.values():
            assert rec["epochs"] == 1 and rec["trained_on"][1] < f"{year}-01-01"
    assert rt["years"]["2006"]["lstm_copula"]["model_version"].endswith(".s5")
    assert (out / "report.html").read_text().startswith("<!doctype html>")


def test_cli_without_data_trains_on_the_shipped_history(tmp_path, tiny, monkeypatch):
    import producers.history

    panel = make_panel(seed=4)
    seen = []

    def fake_load_history(source=None, assets=None, **options):
        seen.append(source)
        return panel

    monkeypatch.setattr(producers.history, "load_history", fake_load_history)
    out = tmp_path / "run"
    rc = main(
        ["backtest", "--models", "cnn", "--period", "2006-01-01:2006-01-31", "--retrain",
         "yearly", "--warmup-days", str(WARMUP), "--out", str(out), "--no-progress",
         "--no-report"]
    )  # fmt: skip
    assert rc == 0 and seen == [None]
    rt = json.loads((out / "summary.json").read_text())["retrain"]
    assert rt["data"] == "shipped history" and rt["seed"] == 0 and rt["epochs"] is None
    assert list(rt["years"]) == ["2006"] and rt["years"]["2006"]["cnn"]["epochs"] <= 2


def test_without_retrain_the_summary_says_so(data_dir, tmp_path):
    out = tmp_path / "run"
    rc = main(
        ["backtest", "--data", str(data_dir), "--models", "hs", "--period", "2006-01-01:2006-01-31",
         "--out", str(out), "--no-progress", "--no-report"]
    )  # fmt: skip
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["retrain"] == {"mode": "none"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "hs,ewma", "--retrain", "yearly"], "--models hs,ewma has none of them"),
        (["--models", "baselines", "--retrain", "yearly"], "retrains the deep models"),
        (["--models", "cnn", "--train-epochs", "3"], "only apply with --retrain yearly"),
        (["--models", "cnn", "--train-seed", "1"], "only apply with --retrain yearly"),
        (["--models", "cnn", "--retrain", "yearly", "--train-epochs", "0"], "must be >= 1"),
    ],
)
def test_bad_retrain_arguments_are_clean_errors(data_dir, tmp_path, capsys, args, message):
    rc = main(["backtest", "--data", str(data_dir), "--out", str(tmp_path), "--no-progress", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_unknown_retrain_mode_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--retrain", "weekly"])
    assert exc.value.code == 2
    assert "invalid choice: 'weekly'" in capsys.readouterr().err


def test_retrain_settings_are_checked():
    with pytest.raises(ValueError, match="weekly"):
        Retrain("weekly")
    with pytest.raises(ValueError, match="training history"):
        Retrain("yearly")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        Retrain("yearly", history=make_panel(n=50), epochs=0)
    plan = plan_for(make_panel(n=300), ("hs",), "2004-01-02", "2004-02-27")
    with pytest.raises(ValueError, match="has none of them"):
        run_backtest(plan, retrain_on(plan.panel), show_progress=False)


def test_lstm_copula_also_trains_on_the_shipped_history_cut_at_each_year(monkeypatch):
    """The default recipe adds the shipped history (here a stand-in from 2001 on) to each
    year's training data, cut at the end of the year before like the backtest's own data."""
    from stream_app import train_lstm_copula

    shipped = make_panel(seed=3, n=1400)  # 2003 .. mid 2008
    shipped = Panel(
        np.busday_offset("2001-01-01", np.arange(shipped.n_days), roll="forward"),
        shipped.assets,
        shipped.open,
        shipped.high,
        shipped.low,
        shipped.close,
        shipped.volume,
    )
    asked = []
    monkeypatch.setattr(train_lstm_copula, "load_panel", lambda data: asked.append(data) or shipped)
    panel = make_panel()
    settings = {"lstm_copula": {**TINY["lstm_copula"], "extra_shipped": True}}
    retrain = Retrain("yearly", history=panel, source="synthetic", warmup_days=WARMUP,
                      settings=settings)  # fmt: skip
    plan = plan_for(panel, ("lstm_copula",), "2005-07-01", "2005-12-31")
    _, record = run_backtest(plan, retrain, show_progress=False, log=None)
    assert asked == [None]  # the shipped history
    assert record["lstm_copula_extra_training_data"] == "shipped history"
    first, last = record["years"]["2005"]["lstm_copula"]["trained_on"]
    assert first < "2002-01-01"  # the stand-in's early years were trained on
    assert "2004-12-01" < last < "2005-01-01"  # and nothing of 2005, from either panel

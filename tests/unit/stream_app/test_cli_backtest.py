"""`riskmon backtest` end to end on a small synthetic CSV folder."""

import csv
import json

import numpy as np
import pytest

from models import backtest as bt
from stream_app.backtest_cmd import FORECAST_COLUMNS
from stream_app.cli import main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    rng = np.random.default_rng(42)
    dates = np.busday_offset("2004-01-01", np.arange(900), roll="forward")
    for name, vol in (("AAA", 0.01), ("BBB", 0.02), ("CCC", 0.015)):
        close = 100 * np.exp(np.cumsum(rng.standard_t(4, dates.size) * vol / np.sqrt(2)))
        with (root / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Date", "Open", "High", "Low", "Close", "Volume"])
            for d, c in zip(dates, close, strict=True):
                w.writerow(
                    [str(d), f"{c:.4f}", f"{c * 1.01:.4f}", f"{c * 0.99:.4f}", f"{c:.4f}", 1000]
                )
    return root


def test_backtest_writes_forecasts_summary_and_report(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "backtest",
            "--data",
            str(data_dir),
            "--models",
            "hs,ewma",
            "--period",
            "2006-01-01:2007-06-30",
            "--weights",
            "AAA=0.5,BBB=0.3,CCC=0.2",
            "--out",
            str(out),
            "--no-progress",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "hs" in printed and "ewma" in printed and "Kupiec" in printed
    with (out / "forecasts.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == FORECAST_COLUMNS
    body = rows[1:]
    assert {r[1] for r in body} == {"hs", "ewma"}
    for r in body:
        values = [float(x) for x in r[2:]]
        var95, var975, var99, es95, es975, es99 = values[1:]
        assert 0 < var95 <= var975 <= var99
        assert es95 >= var95 and es975 >= var975 and es99 >= var99
    assert min(r[0] for r in body) >= "2006-01-01" and max(r[0] for r in body) <= "2007-06-30"
    summary = json.loads((out / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["hs", "ewma"]
    assert summary["portfolio"] == {"AAA": 0.5, "BBB": 0.3, "CCC": 0.2}
    # both are classical: the one with the lower FZ0 on the common days is the reference
    [dm] = summary["fz0_975_diebold_mariano"]
    by_model = {m: [r for r in body if r[1] == m] for m in ("hs", "ewma")}
    common = set.intersection(*({r[0] for r in rows} for rows in by_model.values()))
    fz0 = {}
    for m, rows_m in by_model.items():
        kept = np.array([[float(x) / 100 for x in r[2:]] for r in rows_m if r[0] in common])
        fz0[m] = bt.fz0_losses(kept[:, 0], kept[:, 2], kept[:, 5], 0.975)
    assert dm["reference"] == min(fz0, key=lambda m: fz0[m].mean())
    assert dm["model"] == ({"hs", "ewma"} - {dm["reference"]}).pop()
    assert dm["n_days"] == len(common)
    expected = bt.diebold_mariano(fz0[dm["model"]], fz0[dm["reference"]])
    assert dm["statistic"] == pytest.approx(expected.statistic, rel=1e-4)
    assert dm["pvalue"] == pytest.approx(expected.pvalue, rel=1e-4, abs=1e-9)
    assert "Diebold-Mariano" in printed
    html = (out / "report.html").read_text()
    assert "FZ0 loss against" in html
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # opens with no network


def test_realized_is_the_portfolio_simple_return_in_percent(data_dir, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "backtest",
                "--data",
                str(data_dir),
                "--models",
                "hs",
                "--period",
                "2006",
                "--weights",
                "AAA=1",
                "--out",
                str(out),
                "--no-progress",
                "--no-report",
            ]
        )
        == 0
    )
    with (data_dir / "AAA.csv").open() as fh:
        closes = {r["Date"]: float(r["Close"]) for r in csv.DictReader(fh)}
    days = sorted(closes)
    with (out / "forecasts.csv").open() as fh:
        row = next(csv.DictReader(fh))
    i = days.index(row["date"])
    expected = 100 * (closes[days[i]] / closes[days[i - 1]] - 1)
    assert float(row["realized"]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "nope"], "unknown model 'nope'"),
        (["--period", "1990"], "outside"),
        (["--weights", "AAA=0.5,ZZZ=0.5"], "ZZZ"),
    ],
)
def test_bad_arguments_are_clean_errors(data_dir, tmp_path, capsys, args, message):
    rc = main(["backtest", "--data", str(data_dir), "--out", str(tmp_path), "--no-progress", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err

"""Driver helpers shared by the training commands: years, threads, artifacts, yearly walk-forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.hs import HistoricalSimulation
from models.panel import Panel
from models.walkforward import walk_forward
from stream_app.train_common import (
    concat_results,
    parse_years,
    torch_threads,
    walk_forward_retrained,
    write_artifact,
)


@pytest.fixture(scope="module")
def panel() -> Panel:
    rng = np.random.default_rng(42)
    n, a = 1100, 2
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, a)), axis=0))
    dates = np.datetime64("2001-01-01") + np.arange(n)
    return Panel(dates, ("A", "B"), close, close, close, close, np.zeros_like(close))


def test_parse_years_lists_ranges_sorted_and_distinct() -> None:
    assert parse_years("2012-2013, 2008,2012") == [2008, 2012, 2013]
    with pytest.raises(ValueError, match="no years"):
        parse_years(" , ")


def test_torch_threads_restores_the_setting_even_on_error() -> None:
    old = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == old


def test_write_artifact_makes_the_folder_and_loads_weights_only(tmp_path) -> None:
    payload = {"w": torch.arange(3.0), "meta": {"a": 1}}
    path = write_artifact(payload, tmp_path / "x" / "y" / "a.pt")
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["w"], payload["w"]) and back["meta"] == {"a": 1}


def test_walk_forward_retrained_fits_before_each_year_and_concatenates(panel) -> None:
    w = np.array([0.4, 0.6])
    calls: list[tuple[int, str, int | None]] = []

    def fit(year: int, until: np.datetime64, prev: int | None) -> int:
        calls.append((year, str(until), prev))
        return 50 + (year - 2002) * 10  # the "artifact": an HS window

    seen: list[int] = []
    res = walk_forward_retrained(
        panel,
        [2002, 2003],
        fit,
        lambda window: HistoricalSimulation(w, window=window),
        warm_days=200,
        on_year=lambda year, art, r: seen.append(r.dates.size),
    )
    assert calls == [(2002, "2001-12-31", None), (2003, "2002-12-31", 50)]
    # the same as walking each year by hand from warm_days before it
    r, d = panel.log_returns(), panel.dates[1:]
    by_hand = []
    for year, window in ((2002, 50), (2003, 60)):
        start = int(np.searchsorted(d, np.datetime64(f"{year}-01-01"))) - 200
        by_hand.append(
            walk_forward(
                HistoricalSimulation(w, window=window),
                r[start:],
                d[start:],
                f"{year}-01-01",
                f"{year}-12-31",
            )
        )
    assert seen == [365, 365]
    assert res.model == by_hand[0].model
    np.testing.assert_array_equal(res.dates, np.concatenate([p.dates for p in by_hand]))
    np.testing.assert_array_equal(res.var, np.concatenate([p.var for p in by_hand]))
    np.testing.assert_array_equal(res.es, np.concatenate([p.es for p in by_hand]))
    assert res.n_forecasts == 730


def test_concat_results_needs_a_part() -> None:
    with pytest.raises(ValueError, match="no test years"):
        concat_results([])

"""Tests of producers.presets: named crisis periods and period resolution."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.exceptions import DataError
from producers.presets import (
    DEFAULT_WARMUP_DAYS,
    PRESETS,
    PeriodError,
    Preset,
    get_preset,
    resolve_period,
)

# Weekdays 2000-01-03 .. 2023-12-29 (holidays ignored: enough for snapping).
WEEKDAYS = np.arange("2000-01-03", "2023-12-30", dtype="datetime64[D]")
WEEKDAYS = WEEKDAYS[np.is_busday(WEEKDAYS)]

EXPECTED = {
    "gfc2008": ("2007-07-01", "2009-06-30"),
    "covid2020": ("2020-01-02", "2020-12-31"),
    "euro2011": ("2011-07-01", "2012-06-30"),
    "china2015": ("2015-06-01", "2016-03-31"),
    "rates2022": ("2022-01-03", "2022-12-30"),
}


def test_presets_have_the_documented_periods():
    assert set(PRESETS) == set(EXPECTED)
    for name, (start, end) in EXPECTED.items():
        p = get_preset(name)
        assert (p.name, str(p.start), str(p.end)) == (name, start, end)
        assert p.warmup_days == DEFAULT_WARMUP_DAYS == 500
        assert p.description


def test_preset_is_frozen_and_validated():
    p = get_preset("gfc2008")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.start = np.datetime64("2000-01-01")  # type: ignore[misc]
    with pytest.raises(ValueError, match="end 2020-01-01 is before start 2020-02-01"):
        Preset("x", "2020-02-01", "2020-01-01", "backwards")
    with pytest.raises(ValueError, match="warmup_days must be >= 0, got -1"):
        Preset("x", "2020-01-01", "2020-02-01", "d", warmup_days=-1)


def test_get_preset_is_case_insensitive_and_lists_names():
    assert get_preset(" GFC2008 ") is PRESETS["gfc2008"]
    with pytest.raises(ValueError, match="unknown preset 'gfc2009'; valid presets: gfc2008, "):
        get_preset("gfc2009")


def test_resolve_preset_snaps_to_trading_days_with_warmup():
    start, end, warmup_start = resolve_period("gfc2008", WEEKDAYS)
    # 2007-07-01 is a Sunday; 2009-06-30 a Tuesday.
    assert (str(start), str(end)) == ("2007-07-02", "2009-06-30")
    # 500 weekdays before Monday 2007-07-02 is exactly 100 weeks earlier.
    assert warmup_start == np.datetime64("2007-07-02") - 700
    i = int(np.searchsorted(WEEKDAYS, start))
    assert np.sum((WEEKDAYS >= warmup_start) & (WEEKDAYS < start)) == 500 == i - (i - 500)


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("2020", "2020-01-01", "2020-12-31"),
        ("2008-09-13:2008-09-20", "2008-09-15", "2008-09-19"),
        (" 2008-09-15 : 2008-09-15 ", "2008-09-15", "2008-09-15"),
        ("covid2020", "2020-01-02", "2020-12-31"),
    ],
)
def test_resolve_explicit_periods(spec, start, end):
    s, e, w = resolve_period(spec, WEEKDAYS, warmup_days=5)
    assert (str(s), str(e)) == (start, end)
    assert int(np.searchsorted(WEEKDAYS, s)) - int(np.searchsorted(WEEKDAYS, w)) == 5


def test_warmup_zero_starts_at_start():
    s, _, w = resolve_period("2010", WEEKDAYS, warmup_days=0)
    assert s == w == np.datetime64("2010-01-01")


@pytest.mark.parametrize(
    "spec",
    ["", "20", "2020-1-1:2020-12-31", "2020/01/01:2020/12/31", "2020-13-01:2020-12-31",
     "2020-02-30:2020-03-01", "2020-01-01", "2021-01-01:2020-01-01", "gfc"],
)  # fmt: skip
def test_malformed_specs_are_value_errors(spec):
    with pytest.raises(ValueError, match=r"period|preset"):
        resolve_period(spec, WEEKDAYS)


def test_bad_warmup_and_non_string():
    with pytest.raises(ValueError, match="warmup_days must be an integer >= 0, got -3"):
        resolve_period("2010", WEEKDAYS, warmup_days=-3)
    with pytest.raises(ValueError, match="must be a string"):
        resolve_period(2010, WEEKDAYS)  # type: ignore[arg-type]


def test_period_outside_the_data_names_the_range():
    dates = WEEKDAYS[(WEEKDAYS >= np.datetime64("2010-01-01"))]
    dates = dates[dates <= np.datetime64("2018-12-31")]
    with pytest.raises(
        PeriodError, match=r"covid2020 .* outside the data \(2010-01-01\.\.2018-12-31\)"
    ):
        resolve_period("covid2020", dates)
    with pytest.raises(PeriodError, match="outside the data"):
        resolve_period("2005", dates, warmup_days=0)
    assert issubclass(PeriodError, DataError)


def test_period_past_the_end_is_cut_at_the_last_date():
    dates = WEEKDAYS[WEEKDAYS <= np.datetime64("2022-12-28")]
    start, end, _ = resolve_period("rates2022", dates)
    assert (str(start), str(end)) == ("2022-01-03", "2022-12-28")


def test_not_enough_warmup_is_a_clear_error():
    dates = WEEKDAYS[WEEKDAYS >= np.datetime64("2007-01-01")]
    with pytest.raises(PeriodError, match=r"needs 500 trading days of warm-up before 2007-07-02, "
                       r"but the data \(2007-01-01\.\.2023-12-29\) has 130"):  # fmt: skip
        resolve_period("gfc2008", dates)
    _, _, w = resolve_period("gfc2008", dates, warmup_days=130)
    assert w == dates[0]


def test_weekend_only_period_holds_no_trading_date():
    with pytest.raises(PeriodError, match="holds no trading date"):
        resolve_period("2020-01-04:2020-01-05", WEEKDAYS, warmup_days=0)
    with pytest.raises(PeriodError, match="has no dates"):
        resolve_period("2020", np.array([], dtype="datetime64[D]"))


def test_every_preset_resolves_on_the_shipped_history():
    from producers.history import load_shipped_history

    dates = load_shipped_history(["SP500", "EURUSD"]).dates
    for name in PRESETS:
        start, end, warmup_start = resolve_period(name, dates)
        assert warmup_start < start <= end
        assert int(np.searchsorted(dates, start) - np.searchsorted(dates, warmup_start)) == 500

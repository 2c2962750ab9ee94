"""RollingWindow: event-time eviction, late corrections, warm-up, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.exceptions import DataError, NotEnoughObservations
from models.windows import RollingWindow, sliding_windows

# NYSE trading days around the Lehman weekend and the 2008 Thanksgiving / Christmas gaps
REPLAY_2008 = np.array(
    [
        "2008-09-10", "2008-09-11", "2008-09-12",  # Fri 12th, then Lehman weekend
        "2008-09-15", "2008-09-16", "2008-09-17", "2008-09-18", "2008-09-19",
        "2008-09-22", "2008-09-23", "2008-09-24", "2008-09-25", "2008-09-26",
        "2008-09-29", "2008-09-30",
        "2008-11-25", "2008-11-26", "2008-11-28",  # Thanksgiving 27th closed
        "2008-12-23", "2008-12-24", "2008-12-26",  # Christmas
    ],
    dtype="datetime64[D]",
)  # fmt: skip


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def feed(window: RollingWindow, days: np.ndarray, values: np.ndarray) -> None:
    for d, x in zip(days, values, strict=True):
        window.update(d, x)


def test_warm_up_raises_then_answers(rng: np.random.Generator) -> None:
    w = RollingWindow(window_size=3, n_assets=2, n_features=4)
    xs = rng.normal(size=(3, 2, 4))
    for i in range(2):
        w.update(REPLAY_2008[i], xs[i])
        assert w.get_or_none() is None
        with pytest.raises(NotEnoughObservations, match=r"needs 3 observations.*has"):
            w.get()
    w.update(REPLAY_2008[2], xs[2])
    out = w.get()
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out, np.moveaxis(xs, 0, -1))
    assert w.is_ready and len(w) == 3


def test_evicts_by_event_time_over_2008_replay(rng: np.random.Generator) -> None:
    """The window holds the last 10 *trading* days, whatever the calendar gaps."""
    xs = rng.normal(size=(REPLAY_2008.size, 3, 2))
    w = RollingWindow(window_size=10, n_assets=3, n_features=2)
    for i, (d, x) in enumerate(zip(REPLAY_2008, xs, strict=True)):
        w.update(d, x)
        lo = max(0, i - 9)
        np.testing.assert_array_equal(w.days_, REPLAY_2008[lo : i + 1])
        if i >= 9:
            np.testing.assert_array_equal(w.get(), np.moveaxis(xs[lo : i + 1], 0, -1))
    # the Lehman weekend did not evict anything: 2008-09-12 sat in the window
    # until 10 trading days later
    assert w.last_day_ == np.datetime64("2008-12-26")


def test_max_age_evicts_stale_days_after_gap(rng: np.random.Generator) -> None:
    xs = rng.normal(size=(REPLAY_2008.size, 1, 1))
    w = RollingWindow(window_size=10, n_assets=1, n_features=1, max_age=14)
    feed(w, REPLAY_2008[:15], xs[:15])  # up to 2008-09-30
    assert w.is_ready
    w.update(REPLAY_2008[15], xs[15])  # 2008-11-25: eight weeks later
    np.testing.assert_array_equal(w.days_, REPLAY_2008[15:16])
    assert w.get_or_none() is None
    feed(w, REPLAY_2008[16:18], xs[16:18])
    np.testing.assert_array_equal(w.days_, REPLAY_2008[15:18])


def test_max_age_boundary_is_inclusive() -> None:
    w = RollingWindow(window_size=5, n_assets=1, n_features=1, max_age=3)
    for d in ("2020-03-02", "2020-03-05", "2020-03-06"):
        w.update(np.datetime64(d), np.zeros((1, 1)))
    # 03-02 is 4 days before 03-06 (> 3): evicted; 03-05 is kept
    np.testing.assert_array_equal(
        w.days_, np.array(["2020-03-05", "2020-03-06"], dtype="datetime64[D]")
    )
    w2 = RollingWindow(window_size=5, n_assets=1, n_features=1, max_age=4)
    for d in ("2020-03-02", "2020-03-06"):
        w2.update(d, np.zeros((1, 1)))
    assert len(w2) == 2  # exactly max_age days old stays


def test_late_day_replaces_last(rng: np.random.Generator) -> None:
    w = RollingWindow(window_size=2, n_assets=2, n_features=1)
    a, b, c = rng.normal(size=(3, 2, 1))
    w.update("2008-10-09", a)
    w.update("2008-10-10", b)
    w.update(np.datetime64("2008-10-10"), c)  # correction of Friday's bar
    assert len(w) == 2
    np.testing.assert_array_equal(w.get()[..., 0], a)
    np.testing.assert_array_equal(w.get()[..., 1], c)
    np.testing.assert_array_equal(
        w.days_, np.array(["2008-10-09", "2008-10-10"], dtype="datetime64[D]")
    )


def test_older_day_raises_and_leaves_state(rng: np.random.Generator) -> None:
    w = RollingWindow(window_size=2, n_assets=1, n_features=1)
    w.update("2008-10-09", np.ones((1, 1)))
    w.update("2008-10-10", 2 * np.ones((1, 1)))
    before = pickle.dumps(w)
    with pytest.raises(ValueError, match="2008-10-08 is older than the newest day held 2008-10-10"):
        w.update("2008-10-08", np.zeros((1, 1)))
    assert pickle.dumps(w) == before


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((2, 3)), r"expected x of shape \(1, 1\)"),
        (np.full((1, 1), np.nan), "must be finite"),
        (np.full((1, 1), np.inf), "must be finite"),
    ],
)
def test_bad_input_raises(x: np.ndarray, match: str) -> None:
    w = RollingWindow(window_size=2, n_assets=1, n_features=1)
    with pytest.raises(DataError, match=match):
        w.update("2008-10-09", x)
    assert len(w) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_size": 0}, "window_size must be an integer >= 1, got 0"),
        ({"n_assets": 0}, "n_assets must be an integer >= 1, got 0"),
        ({"n_features": 2.5}, "n_features must be an integer >= 1, got 2.5"),
        ({"max_age": -1}, "max_age must be None or an integer >= 0"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    params = {"window_size": 10, "n_assets": 2, "n_features": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        RollingWindow(**params)


def test_pickle_round_trip_continues_identically(rng: np.random.Generator) -> None:
    xs = rng.normal(size=(REPLAY_2008.size, 4, 3))
    w = RollingWindow(window_size=10, n_assets=4, n_features=3, max_age=30)
    feed(w, REPLAY_2008[:12], xs[:12])
    clone = pickle.loads(pickle.dumps(w))
    np.testing.assert_array_equal(clone.get(), w.get())
    feed(w, REPLAY_2008[12:], xs[12:])
    feed(clone, REPLAY_2008[12:], xs[12:])
    np.testing.assert_array_equal(clone.days_, w.days_)
    assert clone.n_obs_ == w.n_obs_


def test_get_returns_a_copy_and_input_is_not_kept(rng: np.random.Generator) -> None:
    w = RollingWindow(window_size=1, n_assets=1, n_features=2)
    x = rng.normal(size=(1, 2))
    w.update("2020-01-02", x)
    x[:] = 99.0
    out = w.get()
    assert not np.any(out == 99.0)
    out[:] = -1.0
    assert not np.any(w.get() == -1.0)


def test_streaming_equals_sliding_windows(rng: np.random.Generator) -> None:
    days = np.arange("2008-01-01", "2008-03-01", dtype="datetime64[D]")
    days = days[np.is_busday(days)]
    feats = rng.normal(size=(days.size, 5, 3))
    batch = sliding_windows(feats, 10)
    assert batch.shape == (days.size - 9, 5, 3, 10)
    w = RollingWindow(window_size=10, n_assets=5, n_features=3)
    got = []
    for d, x in zip(days, feats, strict=True):
        w.update(d, x)
        if (out := w.get_or_none()) is not None:
            got.append(out)
    np.testing.assert_array_equal(np.stack(got), batch)


def test_sliding_windows_short_input_and_validation() -> None:
    assert sliding_windows(np.zeros((3, 2, 1)), 10).shape == (0, 2, 1, 10)
    with pytest.raises(ValueError, match="n_days, n_assets, n_features"):
        sliding_windows(np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="window_size must be an integer >= 1, got 0"):
        sliding_windows(np.zeros((3, 2, 1)), 0)

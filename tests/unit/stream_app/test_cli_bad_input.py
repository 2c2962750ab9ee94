"""What `riskmon` says to bad input: one line naming the value, exit 2, no traceback."""

from __future__ import annotations

import pytest

from stream_app.cli import build_parser, main


def _usage_error(capsys, argv: list[str]) -> str:
    """The argparse error line of ``argv`` (argparse exits with 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("cmd", ["replay", "demo"])
@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--ticks-per-day", "0", "--ticks-per-day: 0 must be >= 4"),
        ("--ticks-per-day", "-5", "--ticks-per-day: -5 must be >= 4"),
        ("--ticks-per-day", "many", "--ticks-per-day: 'many' is not an integer"),
        ("--bundle", "0", "--bundle: 0 must be >= 1"),
        ("--speed", "nan", "--speed 'nan' must be > 0 or 'max'"),
    ],
)
def test_stream_numbers_are_checked_before_anything_starts(capsys, cmd, flag, value, expected):
    assert expected in _usage_error(capsys, [cmd, flag, value])


def test_speed_infinity_means_max():
    assert build_parser().parse_args(["replay", "--speed", "1e999"]).speed is None


def _error(capsys, argv: list[str]) -> str:
    """The one-line error of a command that fails with exit code 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--jobs", "0"], "--jobs 0: must be >= 1"),
        (["--jobs", "-3"], "--jobs -3: must be >= 1"),
        (["--weights", ""], "--weights '': give 'equal'"),
        (["--assets", "A,B", "--weights", "A=0.9,B=0.1"], "give one of them"),
    ],
)
def test_backtest_options_that_were_silently_ignored(capsys, tmp_path, extra, expected):
    argv = ["backtest", "--data", str(tmp_path), "--out", str(tmp_path / "out"), *extra]
    assert expected in _error(capsys, argv)

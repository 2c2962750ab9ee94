"""What `riskmon` says to bad input: one line naming the value, exit 2, no traceback."""

from __future__ import annotations

import pytest

from stream_app.cli import build_parser


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

"""`riskmon alerts tail`: argument parsing, --since values, the rich line of an alert."""

import pytest

from stream_app.alerts import Alert
from stream_app.alerts_sink import parse_since
from stream_app.cli import build_parser, main
from stream_app.cli_ops import format_alert


def test_parse_since():
    assert parse_since(None) is None
    assert parse_since("all") == parse_since("0") == "0-0"
    assert parse_since("new") == parse_since("$") == "$"
    assert parse_since("90s", now_ms=100_000) == "10000-0"
    assert parse_since("1.5h", now_ms=10**10) == f"{10**10 - 5_400_000}-0"
    assert parse_since("2d", now_ms=1000) == "0-0"  # not before the epoch
    assert parse_since("1222819200000") == "1222819200000-0"
    assert parse_since("2008-10-01") == "1222819200000-0"
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_tail_arguments():
    args = build_parser().parse_args(
        ["alerts", "tail", "--run", "a", "--run", "live", "--since", "10m", "--once"]
    )
    assert args.run == ["a", "live"] and args.since == "10m" and args.once and not args.json
    assert args.func.__name__ == "cmd_alerts_tail"


def test_tail_without_redis_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.delenv("RISKMON_REDIS_URL", raising=False)
    assert main(["alerts", "tail", "--once"]) == 2
    assert "no Redis to read" in capsys.readouterr().err
    assert main(["alerts", "tail", "--count", "0", "--redis", "redis://x:1/0"]) == 2


def test_format_alert():
    a = Alert(
        id="f00",
        rule="stale_feed",
        severity="critical",
        state="firing",
        portfolio="book",
        asset="TLT",
        value=250.0,
        threshold=240.0,
        ts=1_222_862_400 * 10**9,
        day="2008-10-01",
        run_id="gfc",
        model="lstm_copula",
        model_version="v3",
        heatmap="riskmon:heatmap:gfc:book:2008-10-01",
        message="no tick of TLT since 2008-10-01T08:00 while others tick (250 min)",
    )
    text = format_alert(a)
    plain = text.plain
    assert plain.startswith("2008-10-01 12:00:00  FIRING   critical stale_feed")
    assert "book/TLT" in plain and "(250 min)" in plain
    assert "[gfc 2008-10-01 id=f00 model=lstm_copula@v3 heatmap=riskmon:heatmap:gfc:" in plain
    styles = {str(span.style) for span in text.spans}
    assert "bold red" in styles
    resolved = format_alert(Alert(**{**a.to_dict(), "state": "resolved"})).plain
    assert "RESOLVED critical" in resolved

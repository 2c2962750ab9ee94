"""What `riskmon` says to bad input: one line naming the value, exit 2, no traceback."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading

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


ONE = "portfolios:\n  - name: a\n    weights: {AAA: 0.5, BBB: 0.5}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a mapping at the top level (the file is empty)"),
        ("portfolios:\n  - name: a\n    weights: {AAA: 0.5\n", "book.yaml:4:1: not valid YAML"),
        ("AAA: 0.5\nAAA: 0.3\nBBB: 0.2\n", "book.yaml:2:1: not valid YAML: key 'AAA' is repeated"),
        ("weights: 0.5\n", "weights must be a mapping ASSET: WEIGHT, got 0.5"),
        ("weights: [0.5, 0.5]\n", "weights must be a mapping ASSET: WEIGHT, got [0.5, 0.5]"),
        (ONE + "    limits: [1, 2]\n", "limits must be a mapping such as {var99: 0.04}"),
        (ONE.replace("0.5, BBB", "true, BBB"), "weights of ['AAA'] must be numbers"),
        (ONE + "    limit: {var99: 0.1}\n", "unknown key(s) ['limit']; valid: name, weights"),
        ("portfolios: {name: a, weights: {AAA: 1}}\n", "'portfolios' must be a list"),
        (ONE + ONE[12:], "portfolio name(s) ['a'] used more than once"),
        (ONE + ONE[12:].replace("name: a", "name: b"), "holds 2 portfolios (a, b)"),
        (b"\xff\xfe AAA: 1\n", "book.yaml: not UTF-8 text"),
    ],
)
def test_backtest_weights_file(capsys, tmp_path, text, expected):
    book = tmp_path / "book.yaml"
    if isinstance(text, bytes):
        book.write_bytes(text)
    else:
        book.write_text(text)
    argv = ["backtest", "--data", str(tmp_path), "--weights", str(book)]
    assert expected in _error(capsys, argv)


def test_backtest_inline_weights_name_an_asset_once(capsys, tmp_path):
    argv = ["backtest", "--data", str(tmp_path), "--weights", "AAA=0.6,AAA=0.4"]
    assert "'AAA=0.6,AAA=0.4': AAA is given twice" in _error(capsys, argv)


def test_bad_setting_from_an_option_is_one_line(capsys):
    err = _error(capsys, ["worker", "--metrics-port", "-1"])
    assert "metrics_port=-1: Input should be greater than or equal to 0" in err


def test_bad_setting_from_the_environment_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("RISKMON_PARTITIONS", "abc")
    monkeypatch.setenv("RISKMON_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    assert "partitions='abc': Input should be a valid integer" in _error(capsys, ["replay"])


@pytest.fixture
def http_port():
    """A loopback port whose server answers every connection with an HTTP 400 (not Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers 404 to every request: an HTTP server that is not a Grafana."""

    def _answer(self) -> None:
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_found_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(2)


@pytest.mark.parametrize("once", [["--once"], []])
def test_alerts_tail_from_a_server_that_is_not_redis(capsys, http_port, once):
    pytest.importorskip("redis")
    url = f"redis://127.0.0.1:{http_port}/0"
    err = _error(capsys, ["alerts", "tail", "--redis", url, *once])
    assert f"cannot read alerts from {url}" in err and "is it a Redis server?" in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("notaurl", "bad Redis URL 'notaurl' (--redis or RISKMON_REDIS_URL): Redis URL must"),
        ("redis://127.0.0.1:abc/0", "bad Redis URL 'redis://127.0.0.1:abc/0'"),
    ],
)
def test_alerts_tail_bad_url_is_named(capsys, url, expected):
    pytest.importorskip("redis")
    assert expected in _error(capsys, ["alerts", "tail", "--once", "--redis", url])


def test_dashboards_push_to_a_server_that_is_not_grafana(capsys, not_found_url):
    pytest.importorskip("grafana_client")
    err = _error(capsys, ["dashboards", "push", "--url", not_found_url, "--timeout", "3"])
    assert f"Grafana at {not_found_url} failed to create folder 'riskmon' (404)" in err
    assert "base URL of a Grafana" in err


def test_dashboards_push_bad_port_names_the_url(capsys):
    pytest.importorskip("grafana_client")
    err = _error(capsys, ["dashboards", "push", "--url", "http://127.0.0.1:abc"])
    assert "Grafana URL 'http://127.0.0.1:abc' must look like http://host:3000" in err


def test_dashboards_export_onto_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    err = _error(capsys, ["dashboards", "export", "--out", str(target)])
    assert f"cannot write the dashboards to {target}" in err and "is a file" in err


@pytest.mark.parametrize("model", ["lstm-copula", "cnn"])
@pytest.mark.parametrize("until", ["2019-13-45", "yesterday", "2009/12/31"])
def test_train_until_must_be_a_date(capsys, model, until):
    with pytest.raises(SystemExit) as info:
        main(["train", model, "--until", until])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--until: {until!r} is not a date YYYY-MM-DD" in err


@pytest.mark.parametrize(
    ("years", "expected"),
    [
        ("20x8", "'20x8' is not a year YYYY or a range YYYY-YYYY"),
        ("2008,abc", "'abc' is not a year YYYY or a range YYYY-YYYY"),
        ("2009-2007", "range '2009-2007' ends before it starts"),
    ],
)
def test_evaluate_years_are_checked(capsys, years, expected):
    assert expected in _error(capsys, ["evaluate", "cnn", "--years", years])


def test_worker_with_an_unreachable_broker_fails_with_the_address(capsys, monkeypatch):
    # Faust logged the connection error and the worker exited 0, as if it had finished
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RISKMON_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    err = _error(capsys, ["worker", "--metrics-port", "0"])
    assert f"cannot reach a Kafka broker at '127.0.0.1:{port}'" in err

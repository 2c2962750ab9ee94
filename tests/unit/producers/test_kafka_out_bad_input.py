"""ensure_topics against a bad or unreachable broker: a quick, clear BrokerUnavailable."""

import socket
import time

import pytest

pytest.importorskip("kafka")

from producers.kafka_out import BrokerUnavailable, ensure_topics
from stream_app.exceptions import StreamAppError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_fails_fast_with_the_address():
    bootstrap = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach a Kafka broker at '{bootstrap}'"):
        ensure_topics(bootstrap, ["ticks"], 1, bootstrap_timeout_ms=500)
    assert time.monotonic() - t0 < 5.0  # kafka-python's own default waits 30 s


def test_malformed_bootstrap_names_the_value():
    with pytest.raises(BrokerUnavailable, match="'foo:bar' is not host:port") as info:
        ensure_topics("foo:bar", ["ticks"], 1, bootstrap_timeout_ms=500)
    assert isinstance(info.value, StreamAppError)  # the CLI prints it as one line, exit 2

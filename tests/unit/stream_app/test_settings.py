"""Settings: environment prefix, validation, secrets never printed."""

import pytest

pytest.importorskip("pydantic_settings")

from pydantic import ValidationError

from stream_app.settings import Settings, mask_url


def test_defaults_follow_design():
    s = Settings(_env_file=None)
    assert s.kafka_bootstrap is None and s.redis_url is None
    assert (s.topic_ticks, s.topic_dlq, s.topic_bars, s.topic_risk) == (
        "ticks",
        "ticks.dlq",
        "bars",
        "risk",
    )
    assert s.metrics_host == "127.0.0.1"
    assert (s.broker_session_timeout, s.broker_heartbeat_interval) == (6.0, 1.0)
    assert s.broker_rebalance_timeout == 10.0
    assert s.consumer_fetch_max_wait_ms == 10


def test_environment_prefix(monkeypatch):
    monkeypatch.setenv("RISKMON_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("RISKMON_PARTITIONS", "8")
    monkeypatch.setenv("RISKMON_ASSETS", '["SPY","TLT"]')
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored:1")
    s = Settings()
    assert s.kafka_bootstrap == "broker:9092"
    assert s.partitions == 8
    assert s.assets == ("SPY", "TLT")


def test_secrets_masked_everywhere(monkeypatch):
    monkeypatch.setenv("RISKMON_REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("RISKMON_REDIS_URL", "redis://app:s3cret@cache:6379/0")
    s = Settings()
    assert s.redis_password.get_secret_value() == "hunter2"
    for text in (repr(s), str(s), str(s.safe_dict()), f"{s}"):
        assert "hunter2" not in text
        assert "s3cret" not in text
    assert s.safe_dict()["redis_url"] == "redis://app:***@cache:6379/0"
    assert s.redis_url == "redis://app:s3cret@cache:6379/0"  # the value itself is intact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:1", "redis://:***@h:1"),
        ("rediss://u:p@ss@h:1/2", "rediss://u:***@h:1/2"),
        ("kafka://h:9092", "kafka://h:9092"),
        ("h:9092", "h:9092"),
        ("redis://u:p/w@h:1", "redis://u:***@h:1"),
        ("redis://u@h:1", "redis://u@h:1"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_bad_values_raise_with_the_value():
    with pytest.raises(ValidationError, match="broker_session_timeout=40"):
        Settings(broker_session_timeout=40.0, broker_request_timeout=30.0)
    with pytest.raises(ValidationError, match="broker_heartbeat_interval=6"):
        Settings(broker_heartbeat_interval=6.0)
    with pytest.raises(ValidationError, match="replay_run_id='a b'"):
        Settings(replay_run_id="a b")
    with pytest.raises(ValidationError):
        Settings(partitions=0)


def test_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.partitions = 3
    assert s.model_copy(update={"partitions": 3}).partitions == 3

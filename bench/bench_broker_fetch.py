"""The embedded broker's fetch time against the number of record batches in a partition.

The embedded broker (tansu, memory storage engine) keeps each produced record batch
as one object, and a fetch walks a partition's batches up to the offset asked for:
the more batches the partition holds, the slower a fetch from its end, and once the
walk takes longer than the fetch's max wait the fetch comes back empty, every time
(with a 5 ms max wait from about 10,000 single-record batches, with 10 ms from about
twice that). This is why long live runs on the embedded broker slow down
(``bench_latency.py --seconds 60`` and longer), why the worker sends a batch's bars
as one message, and what :class:`stream_app.stalls.FetchStallWatch` reports. Real
Kafka (``RISKMON_KAFKA_BOOTSTRAP``) indexes its segments and has no such growth.

Produces single-record batches (one ``send_and_wait`` each) into one partition and,
at each step, times ``--probes`` fetches of the newest record (seek to its offset,
``getmany``) with the consumer's ``--max-wait`` (default 10 ms, the worker's
``consumer_fetch_max_wait_ms``). Baseline in the same run: the same number of
records sent as large batches (200 records per batch) into another partition,
fetched the same way.

    python bench/bench_broker_fetch.py [--max-wait 10] [--steps 1000,5000,10000,...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app.embedded import EmbeddedKafka


async def probe(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    n: int,
    wait_s: float,
) -> tuple[float, float, int]:
    """Median and max seconds to fetch a record just appended at the end of ``tp``."""
    times, got = [], 0
    for _ in range(n):
        md = await producer.send_and_wait(tp.topic, b"probe", partition=tp.partition)
        t0 = time.perf_counter()
        consumer.seek(tp, md.offset)
        records = await consumer.getmany(tp, timeout_ms=int(wait_s * 1000))
        times.append(time.perf_counter() - t0)
        got += sum(len(v) for v in records.values())
    return statistics.median(times), max(times), got


async def run(
    bootstrap: str, steps: list[int], probes: int, wait_s: float, max_wait_ms: int
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=max_wait_ms, enable_auto_commit=False
    )
    await consumer.start()
    single = TopicPartition("fetch-single", 0)
    batched = TopicPartition("fetch-batched", 0)
    for tp in (single, batched):
        await producer.send_and_wait(tp.topic, b"x", partition=0)
    consumer.assign([single, batched])
    n_single = n_batched = 1
    print(
        f"{'batches':>8} {'single-record batches: p50 / max ms':>38} {'got':>5}"
        f" {'same records, 200 per batch: p50 ms':>38}"
    )
    try:
        for target in steps:
            while n_single < target:
                await producer.send_and_wait(single.topic, b"x" * 100, partition=0)
                n_single += 1
            while n_batched < target:
                futures = [
                    await producer.send(batched.topic, b"x" * 100, partition=0)
                    for _ in range(min(200, target - n_batched))
                ]
                await asyncio.gather(*futures)
                n_batched += len(futures)
            p50, worst, got = await probe(producer, consumer, single, probes, wait_s)
            n_single += probes
            base, _, _ = await probe(producer, consumer, batched, probes, wait_s)
            n_batched += probes
            print(
                f"{target:>8} {p50 * 1e3:>27.1f} / {worst * 1e3:>8.1f} {got:>3}/{probes:<2}"
                f" {base * 1e3:>38.1f}   ratio {p50 / base:.1f}x",
                flush=True,
            )
            if got == 0:
                print(f"no probe record came back within {wait_s:.0f} s: stopping")
                break
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="1000,5000,10000,15000,20000,25000,30000")
    ap.add_argument("--max-wait", type=int, default=10, help="the consumer's fetch max wait, ms")
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--wait", type=float, default=5.0, help="seconds a probe fetch may take")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    with EmbeddedKafka() as kafka:
        kafka.start()
        kafka.wait_ready(20)
        print(f"consumer fetch max wait {args.max_wait} ms")
        asyncio.run(run(kafka.bootstrap, steps, args.probes, args.wait, args.max_wait))


if __name__ == "__main__":
    main()

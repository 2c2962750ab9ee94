"""Log end offsets from a fetch's high watermark, for brokers whose ListOffsets is off.

Faust recovers a table by reading its changelog up to the partition's end offset,
which it asks with ListOffsets(latest) (aiokafka's ``end_offsets``). The embedded
broker (tansu) answers that with the base offset of the partition's last record
batch + 1, not the log end: when the producer put several records in the last batch,
recovery stops short of them and a restarted worker resumes from a stale table
(``tests/integration/test_reliability.py::test_embedded_broker_end_offsets`` pins the
bug). The high watermark a Fetch response carries is right, so
:func:`fetch_high_watermarks` asks for it: one Fetch per leader, at the offsets
ListOffsets gave, waiting at most 5 ms (tansu answers a fetch that may not wait with
no partitions at all) with a budget of one byte per partition (the records that come
back are ignored). On a correct broker both agree and it costs one extra round trip when a
partition is assigned; the larger of the two is used, so a broker that answered the
Fetch with an error leaves the ListOffsets value as it was.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["fetch_high_watermarks", "true_end_offsets"]

log = logging.getLogger(__name__)

_READ_UNCOMMITTED = 0
_WAIT_MS = 5  # the broker may hold the fetch this long (no data at the end offset)


async def fetch_high_watermarks(client: Any, offsets: Mapping[Any, int]) -> dict[Any, int | None]:
    """High watermark of each partition, from a Fetch at its offset in ``offsets``.

    Parameters
    ----------
    client : aiokafka.AIOKafkaClient
        A started client (``consumer._client``) whose metadata knows the partitions.
    offsets : mapping of aiokafka.TopicPartition to int
        Where to fetch from (any offset inside the log; negative ones are sent as 0).

    Returns
    -------
    dict of TopicPartition to int or None
        None for a partition without a known leader or with an error in the response.
    """
    from aiokafka.protocol.fetch import FetchRequest

    out: dict[Any, int | None] = dict.fromkeys(offsets)
    by_name = {(tp.topic, tp.partition): tp for tp in offsets}
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for tp, offset in offsets.items():
        node = client.cluster.leader_for_partition(tp)
        if node is None or node == -1:
            continue
        by_node[node][tp.topic].append((tp.partition, max(int(offset), 0), 1))
    for node, topics in by_node.items():
        # tansu answers a fetch that may not wait (max_wait 0) with no partitions at all
        request = FetchRequest(_WAIT_MS, 1, 1024, _READ_UNCOMMITTED, list(topics.items()))
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                tp = by_name.get((topic, partition))
                if tp is not None:
                    out[tp] = int(highwater) if error_code == 0 and highwater >= 0 else None
    return out


async def true_end_offsets(consumer: Any, partitions: Any) -> dict[Any, int]:
    """``consumer.end_offsets(partitions)``, raised to each partition's fetch high
    watermark where that is larger (see the module docstring)."""
    ends = dict(await consumer.end_offsets(list(partitions)))
    if not ends:
        return ends
    try:
        marks = await fetch_high_watermarks(consumer._client, ends)
    except Exception as exc:  # the ListOffsets answer stands; recovery may be short
        log.warning("could not check the end offsets with a fetch: %r", exc)
        return ends
    for tp, mark in marks.items():
        if mark is not None and mark > ends[tp]:
            log.info(
                "end offset of %s: ListOffsets said %d, the fetch high watermark is %d",
                tp,
                ends[tp],
                mark,
            )
            ends[tp] = mark
    return ends

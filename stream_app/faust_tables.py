"""Plain Faust tables keyed by raw strings: the worker's only kind of state table."""

from __future__ import annotations

from typing import Any


def raw_keyed_table(
    app: Any,
    name: str,
    *,
    partitions: int,
    help: str,
    value_serializer: Any = None,
) -> Any:
    """A plain (never windowed) changelogged table keyed by raw UTF-8 strings.

    Faust derives JSON keys from ``key_type=str``; raw keys make the producer's
    partitioner put a key's state on the partition number of the messages with
    the same key (an asset's ticks, a portfolio's bars). Eviction is by event
    time, in our own code: Faust's windowed tables expire by wall-clock time.
    """
    table = app.Table(
        name,
        default=None,
        partitions=partitions,
        key_type=str,
        use_partitioner=True,
        help=help,
    )
    table.key_serializer = "raw"
    if value_serializer is not None:
        table.value_serializer = value_serializer
    # the changelog topic must be rebuilt to pick up the raw key serializer
    table.changelog_topic = table._new_changelog_topic()
    return table

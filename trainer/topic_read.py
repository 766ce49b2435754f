"""Read a Kafka topic from its beginning to a fixed end, one record at a time.

The trainer reads topics (``kafka:TOPIC`` data, ``--labels-from`` feedback) as a snapshot:
every partition from its first offset up to its end when the read reached it (the
highwater from its first fetch; ``end_offsets`` is wrong on Tansu). Partitions are read
one after the other, in order, so a pass always yields the same records in the same order,
and a second pass over the same snapshot (a streamed epoch, :mod:`trainer.kafka_data`),
given the first pass's ends, reads exactly the same records. Records are yielded as they
arrive: nothing is kept.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from stream.exceptions import DatasetError
from stream.settings import KafkaSettings

#: Records fetched per poll.
POLL_RECORDS = 2000


@dataclass
class TopicSnapshot:
    """Where a read ends: ``ends[partition]`` is the first offset not read."""

    topic: str
    ends: dict[int, int] = field(default_factory=dict)
    read: int = 0


def read_topic(
    topic: str,
    *,
    settings: KafkaSettings,
    max_messages: int,
    timeout_s: float,
    snapshot: TopicSnapshot | None = None,
) -> Generator[Any, None, TopicSnapshot]:
    """Yield every record of ``topic`` up to its end, partition by partition.

    A partition's end is ``snapshot.ends[partition]`` when the snapshot has it, else its
    highwater at its first fetch, recorded into the snapshot (a new one unless given; it is
    the generator's return value). Stops after ``max_messages`` records; raises
    :class:`DatasetError` past ``timeout_s``.
    """
    from kafka import TopicPartition

    from stream.kafka import make_consumer, topic_partitions

    snap = snapshot if snapshot is not None else TopicSnapshot(topic)
    snap.read = 0
    deadline = time.monotonic() + timeout_s
    consumer = make_consumer(settings, group_id=None)
    try:
        for partition in topic_partitions(consumer, topic):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            while snap.read < max_messages:
                end = snap.ends.get(partition)
                if end is not None and consumer.position(tp) >= end:
                    break
                batch = consumer.poll(timeout_ms=300, max_records=POLL_RECORDS).get(tp, [])
                if end is None:
                    high = consumer.highwater(tp)
                    if high is not None:
                        end = snap.ends[partition] = int(high)
                for record in batch:
                    if end is not None and record.offset >= end:
                        break
                    if snap.read >= max_messages:
                        break
                    snap.read += 1
                    yield record
                if time.monotonic() >= deadline:
                    msg = (
                        f"reading {topic!r} to its end took longer than {timeout_s:.0f} s "
                        f"({snap.read} messages read); raise --capture-timeout or "
                        "--max-messages"
                    )
                    raise DatasetError(msg)
    finally:
        consumer.close()
    return snap

"""Kafka client factories: every producer, consumer and admin client is built here.

They are built only from :class:`stream.settings.KafkaSettings` (TLS and SASL included);
keyword overrides go on top. kafka-python errors are wrapped into
:class:`stream.exceptions.BrokerError` keeping their text.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream.exceptions import BrokerError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)


def error_text(exc: BaseException) -> str:
    """``str(exc)`` with the class name once (kafka-python 3 often includes it already)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) or f"] {name}" in text else f"{name}: {text}"


def quiet_kafka_logs() -> None:
    """For short-lived CLI commands: keep kafka-python's connection-retry errors off the
    terminal (our one-line error says what failed), unless the log level is DEBUG."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _where(settings: KafkaSettings) -> str:
    return f"{settings.bootstrap_servers} ({settings.security_protocol})"


@contextlib.contextmanager
def kafka_errors(action: str, settings: KafkaSettings) -> Iterator[None]:
    """Re-raise kafka-python errors as :class:`BrokerError`, naming what was being done."""
    try:
        yield
    except KafkaError as exc:
        msg = f"{action} failed against {_where(settings)}: {error_text(exc)}"
        raise BrokerError(msg) from exc


def _unreachable(settings: KafkaSettings, what: str, exc: Exception) -> BrokerError:
    msg = (
        f"cannot create a Kafka {what}: no broker answered at {_where(settings)} "
        f"({error_text(exc)}); start one with `edgeinfer broker` or fix "
        "--bootstrap-servers / EDGE_BOOTSTRAP_SERVERS"
    )
    return BrokerError(msg)


def _bootstrap_timeout(settings: KafkaSettings, overrides: dict[str, Any]) -> dict[str, Any]:
    """Give up on an unreachable cluster after ``request_timeout_ms`` unless overridden."""
    return {"bootstrap_timeout_ms": settings.request_timeout_ms, **overrides}


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with the project's durable defaults (acks=all, idempotent, lz4)."""
    return _construct(settings, "producer", KafkaProducer, settings.producer_config, overrides)


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None, **overrides: Any
) -> KafkaConsumer:
    """A consumer (manual commits), subscribed to ``topics`` when any are given."""
    config = functools.partial(settings.consumer_config, group_id=group_id)
    consumer = _construct(settings, "consumer", KafkaConsumer, config, overrides)
    if topics:
        with kafka_errors(f"subscribing to {list(topics)}", settings):
            consumer.subscribe(list(topics))
    return consumer


def make_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    return _construct(settings, "admin client", KafkaAdminClient, settings.admin_config, overrides)


_Client = TypeVar("_Client")


def _construct(
    settings: KafkaSettings,
    what: str,
    client: Callable[..., _Client],
    config: Callable[..., dict[str, Any]],
    overrides: dict[str, Any],
) -> _Client:
    """``client(**config(**overrides))``; an unreachable cluster raises :class:`BrokerError`."""
    try:
        return client(**config(**_bootstrap_timeout(settings, overrides)))
    except KafkaError as exc:
        raise _unreachable(settings, what, exc) from exc


def wait_for_broker(settings: KafkaSettings, timeout_s: float) -> None:
    """Return once a broker answers a metadata request; :class:`BrokerError` at the deadline."""
    started = time.monotonic()
    try:
        admin = KafkaAdminClient(
            **settings.admin_config(bootstrap_timeout_ms=max(int(timeout_s * 1000), 1))
        )
    except KafkaError as exc:
        msg = (
            f"no Kafka broker answered a metadata request at {_where(settings)} within "
            f"{timeout_s:.1f} s ({error_text(exc)}); start one with "
            "`edgeinfer broker` or fix --bootstrap-servers / EDGE_BOOTSTRAP_SERVERS"
        )
        raise BrokerError(msg) from exc
    admin.close()
    logger.debug(
        'broker answered bootstrap="%s" after_s=%.2f',
        settings.bootstrap_servers,
        time.monotonic() - started,
    )


def list_topics(settings: KafkaSettings) -> dict[str, int]:
    """``{topic: partition count}`` of every topic on the cluster, internal ones excluded."""
    admin = make_admin(settings)
    try:
        with kafka_errors("listing topics", settings):
            names = [t for t in admin.list_topics() if not t.startswith("__")]
            if not names:
                return {}
            described = admin.describe_topics(names)
        return {d["name"]: len(d["partitions"]) for d in described}
    finally:
        admin.close()


def ensure_topics(
    settings: KafkaSettings,
    topics: Sequence[str],
    partitions: int,
    replication: int = 1,
) -> list[str]:
    """Create the ``topics`` that do not exist yet; returns the names it created.

    Idempotent: existing topics are left as they are (a warning is logged when one has
    fewer partitions than asked for).
    """
    if partitions < 1:
        msg = f"partitions must be >= 1, got {partitions}"
        raise BrokerError(msg)
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    admin = make_admin(settings)
    try:
        with kafka_errors("listing topics", settings):
            existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=replication)]
                )
            except TopicAlreadyExistsError:
                continue  # created concurrently by someone else: fine
            except KafkaError as exc:
                msg = (
                    f"creating topic {topic!r} ({partitions} partitions, replication "
                    f"{replication}) failed against {_where(settings)}: "
                    f"{error_text(exc)}"
                )
                raise BrokerError(msg) from exc
            created.append(topic)
        present = [t for t in wanted if t in existing]
        if present:
            with kafka_errors("describing topics", settings):
                for d in admin.describe_topics(present):
                    if len(d["partitions"]) < partitions:
                        logger.warning(
                            'topic="%s" has partitions=%d, fewer than the %d asked for; '
                            "left unchanged",
                            d["name"],
                            len(d["partitions"]),
                            partitions,
                        )
    finally:
        admin.close()
    if created:
        logger.info("topics created=%s partitions=%d", created, partitions)
    return created


def topic_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition ids of ``topic`` (waits for metadata up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() >= deadline:
            msg = (
                f"topic {topic!r} has no partitions (does it exist?); create it with "
                f"`edgeinfer topics ensure --topic {topic}`"
            )
            raise BrokerError(msg)
        time.sleep(0.1)


def highwater_lag(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    """Lag per assigned partition: highwater (from the last fetch) minus the position.

    Uses ``consumer.highwater()`` and not ``end_offsets()``, which is wrong on Tansu.
    Partitions not fetched yet (highwater unknown) are left out.
    """
    lag: dict[TopicPartition, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = consumer.position(tp)
        if position is None:
            continue
        lag[tp] = max(int(high) - int(position), 0)
    return lag


def seek_to_highwater(
    consumer: KafkaConsumer, partitions: Sequence[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """Move assigned ``partitions`` to their true end (the next offset to be written).

    ``seek_to_end`` asks the broker for the latest offset, which Tansu gets wrong; this
    fetches once from the beginning to learn each partition's highwater and seeks there.
    Returns the offsets it sought to.
    """
    consumer.seek_to_beginning(*partitions)
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(ends) < len(partitions):
        consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
        for tp in partitions:
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = int(high)
        if time.monotonic() >= deadline:
            missing = [f"{tp.topic}[{tp.partition}]" for tp in partitions if tp not in ends]
            msg = f"could not learn the end offset of {missing} within {timeout_s:.0f} s"
            raise BrokerError(msg)
    for tp, offset in ends.items():
        consumer.seek(tp, offset)
    return ends


# ------------------------------------------------------------------ CLI handlers


def run_topics(args: Any) -> int:
    """``edgeinfer topics ensure|list``."""
    from stream.settings import settings_from_args
    from stream.topics import ALL_TOPICS

    settings = settings_from_args(args)
    quiet_kafka_logs()
    if args.action == "ensure":
        wanted = args.topic or list(ALL_TOPICS)
        created = ensure_topics(settings, wanted, partitions=args.partitions)
        for topic in wanted:
            state = "created" if topic in created else "exists"
            print(f"{topic}: {state}")
        return 0
    found = list_topics(settings)
    if not found:
        print(f"no topics on {settings.bootstrap_servers}")
    for topic, count in sorted(found.items()):
        print(f"{topic}\t{count} partitions")
    return 0

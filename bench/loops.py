"""The agent's competitors, each run as ``python -m bench.loops MODE ...`` on the agent's core.

* ``passthrough``: the agent's consume-decode-produce-commit loop without inference, on
  kafka-python with the agent's client settings: poll up to ``max_poll_records``, decode
  with the same :mod:`stream.codecs` decoders and :mod:`edge_agent` helpers (image fit,
  sensor windows), apply the manifest's preprocessing in batches, encode a result of the
  same shape (uniform scores) with the same JSON writer, send; after each poll note the
  offsets, and commit (asynchronously) the newest noted ones whose sends are all
  acknowledged, without waiting (the agent's commit scheme, :class:`Commits`).
  ``--work echo`` sends the input bytes back instead: the bare client ceiling.
* ``confluent``: the same loop on confluent-kafka (librdkafka).
* ``naive``: what many deployments run: iterate the consumer one message at a time,
  decode, Keras ``model.predict`` on that one input, produce, commit every N.

Every loop stops on SIGTERM and after ``--count`` inputs, then prints one JSON line.

Why one module of this size: each loop is a competitor the benchmark compares with the
agent, and the three must stay line-by-line comparable (same decode, same commit point);
they are read side by side, and ``python -m bench.loops MODE`` runs any of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from edge_agent.inputs import fit_image
from edge_agent.windows import DeviceWindows
from stream import content_types, topics
from stream.bundle import Manifest, read_manifest
from stream.codecs import decode_image, decode_sensor_record, headers_dict
from stream.codecs.jsonout import dumps_compact
from stream.kafka import make_consumer, make_producer
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

RESULT_HEADERS = [(topics.H_CONTENT_TYPE, content_types.JSON.encode())]
_STOP = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _STOP  # noqa: PLW0603
    _STOP = True


@dataclass(slots=True)
class Input:
    x: np.ndarray
    device_id: str
    partition: int
    offset: int
    ts: int | None
    kafka_ts: int
    key: bytes | None
    headers: Any


class Decoder:
    """Bytes -> model inputs, as the agent decodes them (images or sensor windows)."""

    def __init__(self, manifest: Manifest, *, max_batch: int) -> None:
        self.manifest = manifest
        self.prep = manifest.preprocessing
        self.max_batch = max_batch
        self.windows: DeviceWindows | None = None
        if isinstance(self.prep, SequencePreprocessing):
            self.windows = DeviceWindows(
                window=self.prep.window, stride=self.prep.stride, channels=self.prep.channels
            )

    def decode(
        self,
        value: bytes,
        headers: Any,
        key: bytes | None,
        partition: int,
        offset: int,
        kafka_ts: int,
    ) -> list[Input]:
        if self.windows is None:
            assert isinstance(self.prep, ImagePreprocessing)
            frame = decode_image(value, headers)
            x = fit_image(frame.pixels, frame.content_type, self.prep)
            device = frame.device_id or (key or b"unknown").decode()
            return [Input(x, device, partition, offset, frame.ts, kafka_ts, key, headers)]
        chunk = decode_sensor_record(value, headers, channels=self.windows.channels)
        full = self.windows.add(
            chunk.device_id,
            chunk.ts,
            chunk.samples,
            partition=partition,
            offset=offset,
            headers=headers,
            now=time.monotonic(),
        )
        return [
            Input(w.values, w.device_id, partition, offset, w.ts, kafka_ts, key, w.headers)
            for w in full
        ]

    def preprocess(self, items: list[Input]) -> list[np.ndarray]:
        """The manifest's preprocessing applied in batches of ``max_batch`` (as the agent)."""
        out = []
        for i in range(0, len(items), self.max_batch):
            part = items[i : i + self.max_batch]
            out.append(self.prep.apply(np.stack([it.x for it in part])))
        return out


def result_bytes(
    manifest: Manifest,
    it: Input,
    row: list[float],
    j: int,
    topic: str,
    agent_id: str,
    infer_ms: float,
) -> bytes:
    """A result in the wire format (same keys and order as the agent's), written with the
    agent's writer (:func:`~stream.codecs.jsonout.dumps_compact`: orjson when installed),
    as the loop decodes with the agent's decoders (row: scores, j: the best one)."""
    labels = manifest.labels
    named = len(labels) == len(row)
    produced_at = int(time.time() * 1000)
    e2e = produced_at - (it.ts if it.ts is not None else it.kafka_ts)
    hdrs = headers_dict(it.headers)
    result = {
        "device_id": it.device_id,
        "model": manifest.name,
        "version": manifest.version,
        "label": labels[j] if named else str(j),
        "score": row[j],
        "scores": dict(zip(labels, row, strict=True)) if named else {},
        "source": {"topic": topic, "partition": it.partition, "offset": it.offset},
        "latency_ms": {"queue": 0.0, "infer": infer_ms, "e2e": float(e2e)},
        "ts": it.ts,
        "produced_at": produced_at,
        "agent_id": agent_id,
        "true_label": hdrs.get(topics.H_LABEL),
        "headers": hdrs,
    }
    return dumps_compact(result)


class Commits:
    """The agent's commit scheme (edge_agent/delivery.py epochs), for a loop whose sends
    go to one output partition, so their acknowledgements come in send order: after each
    poll the offsets are noted with the count of sends so far; the newest noted offsets
    whose sends are all acknowledged are committed, without waiting."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self._noted: deque[tuple[int, dict[int, int]]] = deque()

    def note(self, offsets: dict[int, int]) -> None:
        self._noted.append((self.sent, offsets))

    def due(self) -> dict[int, int]:
        """The offsets to commit now ({} when nothing new is acknowledged)."""
        out: dict[int, int] = {}
        while self._noted and self._noted[0][0] <= self.acked:
            out.update(self._noted.popleft()[1])
        return out


# ------------------------------------------------------------------ kafka-python


def run_passthrough(args: argparse.Namespace, settings: KafkaSettings) -> int:
    manifest = read_manifest(Path(args.bundle)) if args.work == "decode" else None
    decoder = Decoder(manifest, max_batch=args.max_batch) if manifest else None
    uniform = [1.0 / len(manifest.labels)] * len(manifest.labels) if manifest else []
    consumer = make_consumer(
        settings,
        args.input,
        group_id=args.group,
        max_poll_records=args.max_poll_records,
        client_id="bench-passthrough",
    )
    producer = make_producer(settings, client_id="bench-passthrough", max_block_ms=5000)
    from kafka.structs import OffsetAndMetadata, TopicPartition

    commits = Commits()
    futures: deque[Any] = deque()
    done = 0
    try:
        while not _STOP and done < args.count:
            polled = consumer.poll(timeout_ms=200, max_records=args.max_poll_records)
            for tp, records in polled.items():
                if decoder is None:
                    for r in records:
                        futures.append(producer.send(args.output, value=r.value, key=r.key))
                    continue
                items: list[Input] = []
                for r in records:
                    items.extend(
                        decoder.decode(
                            r.value, r.headers, r.key, tp.partition, r.offset, r.timestamp
                        )
                    )
                assert manifest is not None
                for start, _batch in zip(
                    range(0, len(items), args.max_batch), decoder.preprocess(items), strict=True
                ):
                    for it in items[start : start + args.max_batch]:
                        value = result_bytes(
                            manifest, it, uniform, 0, args.input, "passthrough", 0.0
                        )
                        futures.append(
                            producer.send(
                                args.output,
                                value=value,
                                key=it.device_id.encode(),
                                headers=RESULT_HEADERS,
                            )
                        )
            commits.sent = commits.acked + len(futures)
            if polled:
                commits.note({tp.partition: rs[-1].offset + 1 for tp, rs in polled.items() if rs})
            while futures and futures[0].is_done:
                f = futures.popleft()
                if f.exception is not None:
                    raise f.exception
                commits.acked += 1
            offsets = commits.due()
            if offsets:
                consumer.commit_async(
                    {
                        TopicPartition(args.input, p): OffsetAndMetadata(o, "", -1)
                        for p, o in offsets.items()
                    }
                )
            done += sum(len(r) for r in polled.values())
        producer.flush(timeout=15)
    finally:
        producer.close(timeout=5)
        consumer.close(autocommit=False)
    print(json.dumps({"consumed": done}))
    return 0


# ------------------------------------------------------------------ confluent-kafka


def run_confluent(args: argparse.Namespace, settings: KafkaSettings) -> int:
    import confluent_kafka

    manifest = read_manifest(Path(args.bundle)) if args.work == "decode" else None
    decoder = Decoder(manifest, max_batch=args.max_batch) if manifest else None
    uniform = [1.0 / len(manifest.labels)] * len(manifest.labels) if manifest else []
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": args.group,
            "client.id": "bench-confluent",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
        }
    )
    consumer.subscribe([args.input])
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": "bench-confluent",
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 5,
        }
    )
    errors: list[str] = []
    commits = Commits()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        commits.acked += 1

    done = 0
    try:
        while not _STOP and done < args.count:
            # As the agent's transport: the first message, then what is already fetched
            # (consume(n, timeout) alone waits for n messages or the whole timeout).
            first = consumer.poll(0.2)
            producer.poll(0)  # delivery reports
            offsets = commits.due()
            if offsets:
                consumer.commit(
                    offsets=[
                        confluent_kafka.TopicPartition(args.input, p, o) for p, o in offsets.items()
                    ],
                    asynchronous=True,
                )
            if first is None:
                continue
            records = [first]
            if args.max_poll_records > 1:
                records += consumer.consume(num_messages=args.max_poll_records - 1, timeout=0)
            items: list[Input] = []
            for r in records:
                if r.error() is not None:
                    continue
                if decoder is None:
                    producer.produce(
                        args.output, value=r.value(), key=r.key(), on_delivery=on_delivery
                    )
                    commits.sent += 1
                    continue
                _ts_type, ts = r.timestamp()
                items.extend(
                    decoder.decode(
                        r.value() or b"",
                        r.headers(),
                        r.key(),
                        r.partition() or 0,
                        r.offset() or 0,
                        ts,
                    )
                )
            if decoder is not None:
                assert manifest is not None
                for start, _batch in zip(
                    range(0, len(items), args.max_batch), decoder.preprocess(items), strict=True
                ):
                    for it in items[start : start + args.max_batch]:
                        value = result_bytes(manifest, it, uniform, 0, args.input, "confluent", 0.0)
                        producer.produce(
                            args.output,
                            value=value,
                            key=it.device_id.encode(),
                            headers=list(RESULT_HEADERS),  # type: ignore[arg-type]
                            on_delivery=on_delivery,
                        )
                        commits.sent += 1
            if errors:
                msg = f"confluent-kafka delivery failed: {errors[0]}"
                raise RuntimeError(msg)
            last: dict[int, int] = {}
            for r in records:
                if r.error() is None:
                    last[r.partition() or 0] = (r.offset() or 0) + 1
            commits.note(last)
            done += len(records)
    finally:
        producer.flush(5)
        consumer.close()
    print(json.dumps({"consumed": done}))
    return 0


# ------------------------------------------------------------------ naive Keras loop


def run_naive(args: argparse.Namespace, settings: KafkaSettings) -> int:
    import keras

    manifest = read_manifest(Path(args.bundle))
    decoder = Decoder(manifest, max_batch=1)
    model = keras.models.load_model(args.keras, compile=False)
    consumer = make_consumer(
        settings, args.input, group_id=args.group, consumer_timeout_ms=200, client_id="bench-naive"
    )
    producer = make_producer(settings, client_id="bench-naive")
    done = 0
    try:
        while not _STOP and done < args.count:
            for r in consumer:  # one message at a time; StopIteration after 200 ms idle
                for it in decoder.decode(
                    r.value, r.headers, r.key, r.partition, r.offset, r.timestamp
                ):
                    x = decoder.prep.apply(it.x[None])
                    t0 = time.perf_counter()
                    y = np.asarray(model.predict(x, verbose=0), dtype=np.float32)
                    infer_ms = (time.perf_counter() - t0) * 1000.0
                    value = result_bytes(
                        manifest,
                        it,
                        y[0].tolist(),
                        int(y[0].argmax()),
                        args.input,
                        "naive",
                        infer_ms,
                    )
                    producer.send(
                        args.output, value=value, key=it.device_id.encode(), headers=RESULT_HEADERS
                    )
                done += 1
                if done % args.commit_every == 0:
                    consumer.commit()
                if _STOP or done >= args.count:
                    break
        producer.flush(timeout=15)
        consumer.commit()
    finally:
        producer.close(timeout=5)
        consumer.close(autocommit=False)
    print(json.dumps({"consumed": done}))
    return 0


# ------------------------------------------------------------------ TensorFlow footprint


def run_tf_footprint(args: argparse.Namespace) -> int:
    """Import TensorFlow, load the Keras model, predict once, say "ready", wait for SIGTERM."""
    import keras
    import tensorflow  # noqa: F401  (what a TF-based agent imports)

    model = keras.models.load_model(args.keras, compile=False)
    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]
    model.predict(np.zeros(shape, dtype=np.float32), verbose=0)
    print("ready", flush=True)
    while not _STOP:
        time.sleep(0.1)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loops")
    p.add_argument("mode", choices=("passthrough", "confluent", "naive", "tf-footprint"))
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    p.add_argument("--input")
    p.add_argument("--output")
    p.add_argument("--group")
    p.add_argument("--bundle")
    p.add_argument("--keras")
    p.add_argument("--work", choices=("decode", "echo"), default="decode")
    p.add_argument("--count", type=int, default=sys.maxsize)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-poll-records", type=int, default=256)
    p.add_argument("--commit-every", type=int, default=100)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    signal.signal(signal.SIGTERM, _on_term)
    if args.mode == "tf-footprint":
        return run_tf_footprint(args)
    settings = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
    runners: dict[str, Callable[[argparse.Namespace, KafkaSettings], int]] = {
        "passthrough": run_passthrough,
        "confluent": run_confluent,
        "naive": run_naive,
    }
    return runners[args.mode](args, settings)


if __name__ == "__main__":
    sys.exit(main())

"""A ``kafka:`` topic streamed through ``tf.data`` (``--cache none``) on the real broker:
the first pass splits it by a stable hash of each input's place, every epoch reads the same
inputs again (all of them, once), and ``edgeinfer train`` trains on it and reports it as
streamed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.replay import replay_sensors
from tests.fixtures.cli import edgeinfer
from trainer.capture import capture_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("tensorflow")

WINDOW = 100
#: BasicMotions' training split: 40 recordings of 100 readings, one reading per message.
N = 40


def fingerprint(x: np.ndarray) -> float:
    return round(float(np.asarray(x, np.float64).sum()), 3)


def test_a_streamed_topic_reads_every_input_once_per_epoch(
    tmp_path: Path, kafka_settings: Any, unique_topic: Any
) -> None:
    from trainer.data import fit_preprocessing, load_training_data, model_data
    from trainer.kafka_data import KafkaData, KafkaDataset

    topic = unique_topic("sensors")  # four partitions, one reading per message
    replay_sensors(kafka_settings, "basic-motions", topic=topic, rate=0, split="train")
    whole = capture_topic(topic, settings=kafka_settings, window=WINDOW)
    everything = Counter(fingerprint(x) for x in np.concatenate([whole.x_train, whole.x_test]))
    assert sum(everything.values()) == N

    ds = load_training_data(f"kafka:{topic}", settings=kafka_settings, window=WINDOW, cache="none")
    assert isinstance(ds, KafkaDataset)
    assert ds.capture["inputs"] == N and ds.input_shape == (WINDOW, 6)
    prep = fit_preprocessing(ds)
    data = model_data(ds, prep, validation_fraction=0.2, seed=0)
    assert isinstance(data, KafkaData) and data.streamed
    assert data.n_train + data.n_val + len(data.x_test) == N

    # One pass of the reader: the same 80 windows as in memory.
    raw = [x for x, _, _ in ds.reader.inputs(lambda place: True)]
    assert Counter(fingerprint(x) for x in raw) == everything

    def epoch(split_ds: Any) -> list[float]:
        rows = [x for xb, _ in split_ds for x in xb.numpy()]
        return [fingerprint(r) for r in rows]

    train = data.train_dataset(batch_size=8, seed=0)
    first, second = epoch(train), epoch(train)
    assert len(first) == data.n_train and Counter(first) == Counter(second)
    assert first != second  # reshuffled every epoch
    val = epoch(data.val_dataset(batch_size=8))
    assert len(val) == data.n_val
    # Train, validation and test are disjoint and together the whole topic.
    test = [fingerprint(x) for x in data.x_test]
    normalized = Counter(fingerprint(x) for x in prep.apply(np.stack(raw)))
    assert Counter(first) + Counter(val) + Counter(test) == normalized

    # --mix: the original training data joins every epoch, weighted to its share.
    mixed = load_training_data(
        f"kafka:{topic}", settings=kafka_settings, window=WINDOW, cache="none",
        mix="basic-motions", mix_share=0.75,
    )  # fmt: skip
    assert isinstance(mixed, KafkaDataset) and mixed.capture["mix"]["train"]["mix"] == 40
    mdata = model_data(mixed, fit_preprocessing(mixed), validation_fraction=0.2, seed=0)
    assert isinstance(mdata, KafkaData)
    weights = [w for _, _, wb in mdata.train_dataset(batch_size=8, seed=0) for w in wb.numpy()]
    assert len(weights) == mdata.n_train == data.n_train + 32  # 8 of 40 hold out to validate
    w_field, w_mix = mixed.weights or (0.0, 0.0)
    assert sorted(set(weights)) == sorted({np.float32(w_field), np.float32(w_mix)})
    assert weights.count(np.float32(w_mix)) == 32
    assert mixed.test_origin is not None and int(mixed.test_origin.sum()) == 40
    assert len(mdata.x_test) == len(data.x_test) + 40

    out = tmp_path / "run"
    trained = edgeinfer(
        "train", "--dataset", f"kafka:{topic}", "--window", str(WINDOW), "--cache", "none",
        "--arch", "conv1d", "--epochs", "4", "--variants", "float32", "--quiet",
        "--out", str(out), "--bootstrap-servers", kafka_settings.bootstrap_servers,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["streamed"] is True
    assert run["data"]["train"] + run["data"]["validation"] + run["data"]["test"] == N
    report = json.loads((out / "report.json").read_text())
    assert report["capture"]["inputs"] == N
    assert report["capture"]["streamed"]["test_inputs"] == run["data"]["test"]
    assert report["peak_rss_bytes"] > 0
    # Better than chance (4 classes) after 4 short epochs; test_trainer_kafka_memory.py shows
    # a streamed topic learnt to 1.0.
    assert report["keras"]["accuracy"] > 0.25

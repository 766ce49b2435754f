"""Retraining from the field, without a broker: how captured inputs get their labels
(feedback first, then the label header), fit a serving model's geometry, mix with the
original data, and which versions a candidate may take (``_Capture.add`` and
``FeedbackLabels.add`` are what the capture calls for every record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.bundle import Manifest, TensorSpec
from stream.codecs import (
    encode_chunk,
    encode_feedback,
    encode_png,
    image_headers,
    sample_headers,
    sensor_headers,
)
from stream.datasets import Dataset
from stream.exceptions import DatasetError
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing
from stream.schemas import Feedback
from trainer.capture import CapturedDataset, Target, _Capture
from trainer.exceptions import TrainerConfigError
from trainer.feedback import FeedbackLabels
from trainer.retrain import FIELD, MIXED, Like, candidate_version, mix_datasets, saved_options

SRC = "images"


def sample(original: list[tuple[str, bytes]], *, offset: int) -> list[tuple[str, bytes]]:
    """A sample's headers as an agent writes them, for the input at ``offset`` of SRC[0]."""
    return sample_headers(
        original, reason="low_confidence", model="m", version="1", label="3", score=0.4,
        scores={"3": 0.4, "7": 0.6}, drift=0.1, topic=SRC, partition=0, offset=offset,
        last_offset=offset, agent_id="a-1",
    )  # fmt: skip


def feedback(*items: tuple[int, str], topic: str = SRC) -> FeedbackLabels:
    labels = FeedbackLabels("feedback")
    for offset, label in items:
        fb = Feedback(source_topic=topic, source_partition=0, source_offset=offset, label=label)
        labels.add(encode_feedback(fb), None)
    return labels


PNG = encode_png(np.full((8, 8, 1), 200, np.uint8))


def test_a_sample_takes_the_feedback_label_of_its_source_over_its_header() -> None:
    cap = _Capture(topic="samples", feedback=feedback((5, "7"), (6, "1")))
    own = image_headers("image/png", "cam-1", 1, label="3")
    cap.add(PNG, sample(own, offset=5), partition=0, offset=0)  # feedback: 7
    cap.add(PNG, sample(own, offset=9), partition=0, offset=1)  # its header: 3
    unlabelled = image_headers("image/png", "cam-1", 1)
    cap.add(PNG, sample(unlabelled, offset=10), partition=0, offset=2)  # none
    assert cap.names == ["7", "3"]
    assert (cap.by_feedback, cap.by_header, cap.unlabelled) == (1, 1, 1)
    assert cap.feedback is not None
    assert cap.feedback.summary() == {
        "topic": "feedback", "messages": 2, "inputs_labelled": 2, "matched": 1,
        "unmatched": 1, "undecodable": 0, "relabelled": 0,
    }  # fmt: skip


def test_a_sensor_window_sample_is_labelled_by_its_last_reading() -> None:
    window = np.arange(12, dtype=np.float32).reshape(4, 3)
    value = encode_chunk("watch-1", 7, window)
    own = sensor_headers("watch-1", 7)
    # Feedback names the first reading (20): not the window's place; the last (23) is.
    cap = _Capture(topic="samples", feedback=feedback((20, "walk"), topic="sensors"))
    hdrs = sample_headers(
        own, reason="drift", model="m", version="1", label="run", score=0.9,
        scores={"run": 0.9}, drift=None, topic="sensors", partition=0, offset=20,
        last_offset=23, agent_id="a",
    )  # fmt: skip
    cap.add(value, hdrs)
    assert (cap.by_feedback, cap.unlabelled, cap.recordings) == (0, 1, [])
    cap = _Capture(topic="samples", feedback=feedback((23, "walk"), topic="sensors"))
    cap.add(value, hdrs)
    cap.add(value, hdrs)
    # Each sample is a whole window: two recordings, not one of 8 readings.
    assert [(r.label, r.samples().shape) for r in cap.recordings] == [("walk", (4, 3))] * 2


def test_a_plain_message_is_labelled_by_its_own_place() -> None:
    cap = _Capture(topic=SRC, feedback=feedback((4, "9")))
    cap.add(PNG, image_headers("image/png", "cam", 1), partition=0, offset=4)
    cap.add(PNG, image_headers("image/png", "cam", 1), partition=1, offset=4)
    assert (cap.names, cap.unlabelled) == (["9"], 1)


def test_a_target_fits_images_and_skips_other_labels_and_shapes() -> None:
    prep = ImagePreprocessing(height=4, width=6, channels=3, color="RGB", mean=[0.5] * 3,
                              std=[0.2] * 3)  # fmt: skip
    cap = _Capture(topic=SRC, target=Target(preprocessing=prep, labels=["a", "b"], source="t"))
    cap.add(PNG, image_headers("image/png", "c", 1, label="a"))
    cap.add(PNG, image_headers("image/png", "c", 1, label="zebra"))
    cap.add(encode_chunk("d", 1, [[1.0]]), sensor_headers("d", 1, label="a"))
    assert [im.shape for im in cap.inputs] == [(4, 6, 3)]
    assert (cap.unknown_label, cap.wrong_shape) == (1, 1)
    seq = SequencePreprocessing(window=2, stride=2, channels=3, mean=[0.0] * 3, std=[1.0] * 3)
    cap = _Capture(topic="s", target=Target(preprocessing=seq, labels=["a"], source="t"))
    cap.add(encode_chunk("d", 1, [[1.0, 2.0]]), sensor_headers("d", 1, label="a"))
    assert (cap.wrong_shape, cap.recordings) == (1, [])


def test_feedback_keeps_the_last_label_and_counts_what_it_cannot_read() -> None:
    labels = feedback((1, "a"), (1, "b"), (2, "c"), (2, "c"))
    labels.add(b"{not json", None)
    labels.add(b'{"source": {"topic": "x", "partition": 0, "offset": -1}}', None)  # no label
    assert labels.labels == {(SRC, 0, 1): "b", (SRC, 0, 2): "c"}
    assert (labels.messages, labels.undecodable, labels.relabelled) == (6, 2, 1)
    assert labels.first_error.startswith("not_json: ")


headers_st = st.lists(
    st.tuples(
        st.sampled_from([
            "label", "content-type", "sample-reason", "sample-model", "sample-version",
            "sample-label", "sample-score", "sample-scores", "source-topic",
            "source-partition", "source-offset", "source-last-offset", "agent-id", "x",
        ]),
        st.binary(max_size=20) | st.sampled_from([b"image/png", b"application/json", b"3"]),
    ),
    max_size=14,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    value=st.none() | st.binary(max_size=200) | st.sampled_from([PNG, b'{"device_id":"d"}']),
    headers=headers_st,
)
def test_hostile_records_are_counted_never_raised(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    prep = ImagePreprocessing(height=8, width=8, channels=1, mean=[0.5], std=[0.2])
    target = Target(preprocessing=prep, labels=["3"], source="t")
    cap = _Capture(topic=SRC, feedback=feedback((0, "3")), target=target)
    cap.add(value, headers, partition=0, offset=0)
    used = len(cap.inputs) + sum(len(r.rows) for r in cap.recordings)
    skipped = cap.unlabelled + cap.undecodable + cap.unknown_label + cap.wrong_shape
    assert used + skipped == cap.read == 1


def dataset(name: str, x: np.ndarray, y: list[int], labels: list[str]) -> Dataset:
    half = len(x) // 2
    return Dataset(
        name=name, kind="image", x_train=x[:half], y_train=np.array(y[:half]),
        x_test=x[half:], y_test=np.array(y[half:]), labels=labels,
    )  # fmt: skip


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.8])
def test_mixing_gives_the_original_data_its_share_of_the_loss(share: float) -> None:
    prep = ImagePreprocessing(height=4, width=4, channels=1, mean=[0.5], std=[0.2])
    target = Target(preprocessing=prep, labels=["b", "a", "c"], source="bundle x")
    field = CapturedDataset(
        name="samples", kind="image", x_train=np.zeros((3, 4, 4, 1), np.uint8),
        y_train=np.array([0, 1, 2]), x_test=np.zeros((1, 4, 4, 1), np.uint8),
        y_test=np.array([1]), labels=target.labels, capture={"inputs": 4},
    )  # fmt: skip
    # The original: 8x8 images (resized to 4x4) with labels in another order.
    original = dataset("orig", np.full((20, 8, 8, 1), 9, np.uint8), [0, 1] * 10, ["a", "b"])
    mixed = mix_datasets(field, original, share=share, target=target)
    assert mixed.x_train.shape == (13, 4, 4, 1) and mixed.labels == ["b", "a", "c"]
    assert mixed.y_train[3:].tolist() == [1, 0] * 5  # a -> 1, b -> 0
    w = mixed.train_weights
    assert w is not None and w.mean() == pytest.approx(1.0)
    assert w[3:].sum() / w.sum() == pytest.approx(share)
    assert mixed.test_origin is not None
    assert mixed.test_origin.tolist() == [FIELD] + [MIXED] * 10
    assert mixed.capture["mix"]["train"] == {"field": 3, "mix": 10}
    assert mixed.capture["inputs"] == 4


def test_mixing_refuses_labels_and_windows_the_model_does_not_have() -> None:
    prep = ImagePreprocessing(height=8, width=8, channels=1, mean=[0.5], std=[0.2])
    target = Target(preprocessing=prep, labels=["a"], source="bundle x")
    x = np.zeros((4, 8, 8, 1), np.uint8)
    field = CapturedDataset(
        name="s", kind="image", x_train=x[:2], y_train=np.zeros(2, np.int64), x_test=x[2:],
        y_test=np.zeros(2, np.int64), labels=["a"], capture={},
    )  # fmt: skip
    with pytest.raises(DatasetError, match=r"labels \['b'\] that bundle x does not know"):
        mix_datasets(field, dataset("o", x, [0, 1, 0, 1], ["a", "b"]), share=0.5, target=target)


def like(version: str) -> Like:
    prep = SequencePreprocessing(window=4, stride=2, channels=1, mean=[0.0], std=[1.0])
    spec = TensorSpec(shape=[None, 4, 1], dtype="float32")
    manifest = Manifest(
        name="m", version=version, variant="int8", task="sequence-classification",
        input=spec, output=spec, preprocessing=prep, labels=["a", "b"],
    )  # fmt: skip
    return Like(path=Path("serving"), manifest=manifest)


def test_a_candidate_sorts_after_the_serving_version() -> None:
    assert candidate_version("2", like("1")) == "2"
    assert candidate_version("10", like("9")) == "10"
    assert candidate_version(None, None) is None
    assert (candidate_version(None, like("1")) or "") > "2000"  # now, as YYYYMMDDHHMMSS
    with pytest.raises(TrainerConfigError, match="--version 1 does not sort after 1, the"):
        candidate_version("1", like("1"))
    with pytest.raises(TrainerConfigError, match="pass a higher --version"):
        candidate_version("9", like("10"))


def test_export_reads_a_retrained_run_with_its_own_options() -> None:
    capture = {
        "feedback": {"topic": "fb"},
        "mix": {"dataset": "digits", "share": 0.3},
        "like": {"bundle": "registry/m/1"},
    }
    assert saved_options(capture) == {
        "labels_from": "fb", "mix": "digits", "mix_share": 0.3, "like": "registry/m/1",
    }  # fmt: skip
    assert saved_options({"feedback": None, "mix": None, "like": None}) == {}
    assert saved_options(None) == {}

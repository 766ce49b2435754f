"""The manifest's reference statistics: format, what the trainer computes, signatures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.bundle import (
    MANIFEST_FILE,
    Manifest,
    TensorSpec,
    generate_keys,
    load_private_key,
    load_public_key,
    read_manifest,
    verify_bundle,
    write_bundle,
)
from stream.exceptions import BundleError
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing
from stream.reference import SCORE_EDGES, Reference, ScoreReference
from trainer.reference import IMAGE_EDGES, build_reference, input_channels, score_reference

MODEL = b"TFL3" + bytes(range(256))


def sequence_manifest(reference: Reference | None, channels: int = 3) -> Manifest:
    return Manifest(
        name="motions",
        version="1",
        variant="float32",
        task="sequence-classification",
        input=TensorSpec(shape=[None, 20, channels], dtype="float32"),
        output=TensorSpec(shape=[None, 4], dtype="float32"),
        preprocessing=SequencePreprocessing(
            window=20, stride=20, channels=channels, mean=[0.0] * channels, std=[1.0] * channels
        ),
        labels=["a", "b", "c", "d"],
        reference=reference,
    )


def windows(n: int = 50, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20, channels)).astype(np.float32) * np.arange(1, channels + 1)


def test_sequence_reference_bins_are_deciles_of_the_raw_values() -> None:
    x = windows()
    ref = build_reference(x, "sequence")
    assert ref is not None and ref.kind == "sequence" and ref.samples == 50
    assert len(ref.channels) == 3 and ref.score is None
    for c, ch in enumerate(ref.channels):
        assert len(ch.edges) == 9 and len(ch.proportions) == 10
        assert ch.proportions == pytest.approx([0.1] * 10, abs=0.002)
        assert ch.mean == pytest.approx(float(x[:, :, c].mean()))
        assert ch.std == pytest.approx(float(x[:, :, c].std()), rel=1e-6)
        assert np.isclose(ch.edges[4], np.median(x[:, :, c]))


def test_a_constant_channel_gets_a_bin_of_its_own() -> None:
    x = np.zeros((10, 20, 2), dtype=np.float32)
    x[:, :, 1] = np.arange(20)
    ch = input_channels(x, "sequence")[0]
    assert ch.edges[0] == 0.0 and ch.edges[1] > 0.0 and len(ch.edges) == 2
    assert ch.proportions == [0.0, 1.0, 0.0]


def test_image_reference_uses_16_fixed_pixel_bins_per_channel() -> None:
    x = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    x[..., 0] = 255
    x[:2, ..., 1] = 20
    ref = build_reference(x, "image")
    assert ref is not None and ref.kind == "image" and len(ref.channels) == 3
    r, g, b = ref.channels
    assert r.edges == list(IMAGE_EDGES) and r.proportions[-1] == 1.0
    assert g.proportions[0] == 0.5 and g.proportions[1] == 0.5
    assert b.proportions[0] == 1.0 and b.mean == 0.0


def test_score_reference_bins_the_top_class_score() -> None:
    probs = np.array([[0.92, 0.08], [0.5, 0.5], [0.02, 0.98], [np.nan, 0.0]], dtype=np.float32)
    s = score_reference(probs)
    assert s.edges == list(SCORE_EDGES) and s.samples == 4
    assert sum(s.proportions) == pytest.approx(1.0)
    # 0.5 falls in [0.5, 0.55), 0.92 in [0.9, 0.95), 0.98 in [0.95, 1], NaN counts as 0.
    assert s.proportions[10] == 0.25 and s.proportions[18] == 0.25 and s.proportions[19] == 0.25
    assert s.proportions[0] == 0.25
    assert s.share_below(0.5) == pytest.approx(0.25)
    assert s.share_below(1.0) == pytest.approx(1.0) and s.share_below(0.0) == 0.0


def test_too_many_channels_write_no_reference() -> None:
    assert build_reference(np.zeros((2, 3, 1025), dtype=np.float32), "sequence") is None


def test_manifest_with_reference_round_trips_signed(tmp_path: Path) -> None:
    ref = build_reference(windows(), "sequence")
    assert ref is not None
    ref = replace(ref, score=score_reference(np.full((5, 4), 0.25)))
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    generate_keys(private, public)
    write_bundle(
        tmp_path / "b", sequence_manifest(ref), MODEL, private_key=load_private_key(private)
    )
    verified = verify_bundle(tmp_path / "b", public_key=load_public_key(public))
    assert verified.manifest.reference == ref
    raw = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text())
    assert raw["reference"]["channels"][0]["edges"] == ref.channels[0].edges
    # The signature covers the reference: a changed share is a tampered manifest.
    raw["reference"]["channels"][0]["proportions"][0] += 0.0001
    raw["reference"]["channels"][0]["proportions"][1] -= 0.0001
    (tmp_path / "b" / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="signature"):
        verify_bundle(tmp_path / "b", public_key=load_public_key(public))


def test_old_signed_manifest_without_reference_still_verifies(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    generate_keys(private, public)
    write_bundle(
        tmp_path / "b", sequence_manifest(None), MODEL, private_key=load_private_key(private)
    )
    raw = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text())
    assert "reference" not in raw  # what a bundle written before the field looks like
    m = verify_bundle(tmp_path / "b", public_key=load_public_key(public)).manifest
    assert m.reference is None


def _with_reference(tmp_path: Path, reference: Any) -> Path:
    write_bundle(tmp_path / "b", sequence_manifest(None), MODEL)
    path = tmp_path / "b" / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["reference"] = reference
    path.write_text(json.dumps(raw))
    return tmp_path / "b"


GOOD_CHANNEL = {"edges": [0.0], "proportions": [0.5, 0.5], "mean": 0.0, "std": 1.0}


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ("x", "JSON object"),
        ({"kind": "video", "samples": 1, "channels": [GOOD_CHANNEL] * 3}, "kind"),
        ({"kind": "sequence", "samples": -1, "channels": [GOOD_CHANNEL] * 3}, "samples"),
        ({"kind": "sequence", "samples": 1, "channels": []}, "channels"),
        ({"kind": "sequence", "samples": 1, "channels": [GOOD_CHANNEL]}, "3 sequence channel"),
        ({"kind": "image", "samples": 1, "channels": [GOOD_CHANNEL] * 3}, "image channel"),
        (
            {"kind": "sequence", "samples": 1, "channels": [{**GOOD_CHANNEL, "edges": [1, 0]}] * 3},
            "proportions",
        ),
        (
            {
                "kind": "sequence",
                "samples": 1,
                "channels": [{"edges": [1.0, 0.0], "proportions": [0.2, 0.3, 0.5]}] * 3,
            },
            "channel 0",
        ),
        (
            {
                "kind": "sequence",
                "samples": 1,
                "channels": [{**GOOD_CHANNEL, "edges": [1.0, 0.0], "proportions": [0.2, 0.3, 0.5]}]
                * 3,
            },
            "strictly increasing",
        ),
        (
            {
                "kind": "sequence",
                "samples": 1,
                "channels": [{**GOOD_CHANNEL, "proportions": [1, 1]}],
            },
            "sum to 1",
        ),
        (
            {"kind": "sequence", "samples": 1, "channels": [{**GOOD_CHANNEL, "mean": "NaN"}] * 3},
            "finite",
        ),
        (
            {
                "kind": "sequence",
                "samples": 1,
                "channels": [GOOD_CHANNEL] * 3,
                "score": {"edges": [1.5], "proportions": [0.5, 0.5], "samples": 2},
            },
            "inside",
        ),
    ],
)
def test_malformed_reference_makes_the_manifest_malformed(
    tmp_path: Path, reference: Any, match: str
) -> None:
    with pytest.raises(BundleError, match=match):
        read_manifest(_with_reference(tmp_path, reference))


def test_image_manifest_reference_must_match_its_channels(tmp_path: Path) -> None:
    ref = build_reference(np.zeros((2, 8, 8, 3), dtype=np.uint8), "image")
    m = Manifest(
        name="d",
        version="1",
        variant="int8",
        task="image-classification",
        input=TensorSpec(shape=[None, 8, 8, 1], dtype="float32"),
        output=TensorSpec(shape=[None, 2], dtype="float32"),
        preprocessing=ImagePreprocessing(height=8, width=8, channels=1),
        labels=["a", "b"],
        reference=ref,
    )
    write_bundle(tmp_path / "b", m, MODEL)
    with pytest.raises(BundleError, match="3 image channel"):
        read_manifest(tmp_path / "b")


def test_share_below_interpolates_within_a_bin() -> None:
    s = ScoreReference(edges=[0.5], proportions=[0.4, 0.6], samples=10)
    assert s.share_below(0.25) == pytest.approx(0.2)
    assert s.share_below(0.75) == pytest.approx(0.7)

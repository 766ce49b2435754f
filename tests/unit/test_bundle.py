"""Model bundles: write/verify round trip, tampering, signatures, keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from stream.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    TensorSpec,
    TrustPolicy,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
    load_public_keys,
    now_version,
    read_manifest,
    sha256_hex,
    sign_manifest,
    verify_bundle,
    write_bundle,
)
from stream.exceptions import BundleError
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing

MODEL = b"TFL3" + bytes(range(256)) * 4


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "digits-cnn",
        "version": "20240610120000",
        "variant": "int8",
        "task": "image-classification",
        "input": TensorSpec(shape=[None, 8, 8, 1], dtype="int8", scale=0.0039, zero_point=-128),
        "output": TensorSpec(shape=[None, 10], dtype="int8", scale=0.00390625, zero_point=-128),
        "preprocessing": ImagePreprocessing(height=8, width=8, channels=1, mean=[0.5], std=[0.25]),
        "labels": [str(i) for i in range(10)],
        "metrics": {"int8": {"accuracy": 0.97, "size_bytes": 1234}, "float32": {"accuracy": 0.98}},
    }
    fields.update(changes)
    return Manifest(**fields)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "edgeinfer.key", tmp_path / "keys" / "edgeinfer.pub"
    generate_keys(private, public)
    return private, public


def test_write_and_verify_round_trip_unsigned(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", manifest(), MODEL)
    assert sorted(p.name for p in bundle.path.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert bundle.model_bytes() == MODEL
    m = bundle.manifest
    assert m.model_sha256 == sha256_hex(MODEL) and m.model_size == len(MODEL)
    assert m.created_at and m.signature is None
    verified = verify_bundle(tmp_path / "b")
    assert verified.manifest == m
    assert read_manifest(tmp_path / "b") == m
    assert (
        verified.manifest.input.quantized and not TensorSpec(shape=[1], dtype="float32").quantized
    )
    # No leftover temporary folders next to the bundle.
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_sequence_manifest_round_trips(tmp_path: Path) -> None:
    m = manifest(
        task="sequence-classification",
        variant="float32",
        input=TensorSpec(shape=[None, 100, 6], dtype="float32"),
        preprocessing=SequencePreprocessing(
            window=100, stride=50, channels=6, mean=[0.0] * 6, std=[1.0] * 6
        ),
        use_default_delegates=False,
    )
    back = verify_bundle(write_bundle(tmp_path / "s", m, MODEL).path).manifest
    assert back.preprocessing == m.preprocessing
    assert back.use_default_delegates is False


def test_signed_round_trip(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    bundle = write_bundle(tmp_path / "b", manifest(), MODEL, private_key=load_private_key(private))
    sig = bundle.manifest.signature
    assert sig is not None and sig["algorithm"] == "ed25519"
    pub = load_public_key(public)
    assert sig["key_id"] == key_id(pub)
    assert verify_bundle(tmp_path / "b", public_key=pub).manifest == bundle.manifest
    # Without a key the signature is not checked, and the bundle still loads.
    assert verify_bundle(tmp_path / "b").manifest.signature == sig


def test_overwriting_a_bundle_replaces_it(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", manifest(), MODEL)
    write_bundle(tmp_path / "b", manifest(version="2"), MODEL + b"x")
    assert verify_bundle(tmp_path / "b").manifest.version == "2"


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", manifest(), MODEL)
    (tmp_path / "b" / MODEL_FILE).write_bytes(MODEL[:-1] + b"\x00")
    with pytest.raises(BundleError, match="does not match the manifest"):
        verify_bundle(tmp_path / "b")


def _signed_bundle(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """``tmp_path/b``, signed with the private key of ``keys``."""
    write_bundle(tmp_path / "b", manifest(), MODEL, private_key=load_private_key(keys[0]))
    return tmp_path / "b"


def _assert_signature_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_bundle(bundle, public_key=load_public_key(keys[1]))


def _edit_manifest(directory: Path, **changes: Any) -> None:
    path = directory / MANIFEST_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes",
    [
        {"labels": ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"]},
        {"version": "99999999999999"},
        {"preprocessing": {"kind": "image", "height": 8, "width": 8, "channels": 1}},
        {"metrics": {}},
    ],
    ids=["labels", "version", "preprocessing", "metrics"],
)
def test_tampered_signed_manifest_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], changes: dict[str, Any]
) -> None:
    bundle = _signed_bundle(tmp_path, keys)
    _edit_manifest(bundle, **changes)
    _assert_signature_refused(bundle, keys)


def test_swapped_model_with_updated_hash_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    bundle = _signed_bundle(tmp_path, keys)
    evil = b"TFL3 evil model"
    (bundle / MODEL_FILE).write_bytes(evil)
    _edit_manifest(bundle, model_sha256=sha256_hex(evil), model_size=len(evil))
    _assert_signature_refused(bundle, keys)


@pytest.mark.parametrize(
    "signature",
    [{}, {"value": "!!not base64!!"}, {"value": ""}, "abc", [], 5],
    ids=["empty", "bad-base64", "empty-value", "string", "list", "int"],
)
def test_malformed_signature_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], signature: Any
) -> None:
    bundle = _signed_bundle(tmp_path, keys)
    _edit_manifest(bundle, signature=signature)
    _assert_signature_refused(bundle, keys)


def test_unsigned_bundle_is_refused_when_a_key_is_given(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    _, public = keys
    write_bundle(tmp_path / "b", manifest(), MODEL)
    pub = load_public_key(public)
    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(tmp_path / "b", public_key=pub)
    # Explicitly allowed, it loads.
    assert verify_bundle(tmp_path / "b", public_key=pub, require_signature=False)
    # A signature can be demanded even without a key.
    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(tmp_path / "b", require_signature=True)


def test_stripping_the_signature_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    write_bundle(tmp_path / "b", manifest(), MODEL, private_key=load_private_key(private))
    _edit_manifest(tmp_path / "b", signature=None, labels=["x"] * 10)
    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(tmp_path / "b", public_key=load_public_key(public))


def test_wrong_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    other_private, other_public = tmp_path / "other.key", tmp_path / "other.pub"
    generate_keys(other_private, other_public)
    write_bundle(tmp_path / "b", manifest(), MODEL, private_key=load_private_key(private))
    other = load_public_key(other_public)
    with pytest.raises(BundleError) as info:
        verify_bundle(tmp_path / "b", public_key=other)
    assert key_id(other) in str(info.value)
    assert "signed by another key" in str(info.value)


def test_generate_keys(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    priv, pub = load_private_key(private), load_public_key(public)
    assert key_id(priv.public_key()) == key_id(pub)
    assert len(key_id(pub)) == 16
    signed = sign_manifest(manifest(), priv)
    assert signed.signature is not None
    # A fresh pair differs.
    generate_keys(private.with_name("b.key"), public.with_name("b.pub"))
    assert key_id(load_public_key(public.with_name("b.pub"))) != key_id(pub)


def test_regenerated_private_key_is_not_left_world_readable(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    private.write_text("old")
    private.chmod(0o644)
    generate_keys(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    load_private_key(private)


def test_key_loading_errors(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    with pytest.raises(BundleError, match="keys generate"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(BundleError, match="keys generate"):
        load_private_key(public)  # a public key is not a private key
    with pytest.raises(BundleError, match="cannot read public key"):
        load_public_key(private)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(BundleError):
        load_public_key(junk)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        ("{", "not valid JSON"),
        ("[1]", "JSON object"),
        ("[" * 100_000, "not valid JSON"),
        ('{"name": "x"}', "malformed field"),
        (b"\xff\xfe", "not valid JSON"),
    ],
    ids=["missing", "truncated", "array", "deep", "fields", "not-utf8"],
)
def test_bad_manifest_files(tmp_path: Path, content: str | bytes | None, match: str) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    (directory / MODEL_FILE).write_bytes(MODEL)
    if isinstance(content, bytes):
        (directory / MANIFEST_FILE).write_bytes(content)
    elif content is not None:
        (directory / MANIFEST_FILE).write_text(content)
    with pytest.raises(BundleError, match=match):
        verify_bundle(directory)


@pytest.mark.parametrize(
    "changes",
    [
        {"input": [1, 2]},
        {"input": {"shape": 5, "dtype": "int8"}},
        {"output": {"shape": [float("inf")], "dtype": "int8"}},
        {"preprocessing": "image"},
        {"preprocessing": {"kind": "audio"}},
        {"labels": 3},
    ],
    ids=["input-list", "shape-int", "shape-inf", "prep-str", "prep-kind", "labels-int"],
)
def test_malformed_manifest_fields_raise_bundle_error(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    write_bundle(tmp_path / "b", manifest(), MODEL)
    _edit_manifest(tmp_path / "b", **changes)
    with pytest.raises(BundleError):
        verify_bundle(tmp_path / "b")


def test_missing_model_file(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", manifest(), MODEL)
    (tmp_path / "b" / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match="cannot read"):
        verify_bundle(tmp_path / "b")


def test_now_version_sorts_as_time() -> None:
    v = now_version()
    assert len(v) == 14 and v.isdigit()


# ------------------------------------------------------------ caps, key sets


def test_a_model_over_the_cap_or_a_fifo_manifest_is_refused(tmp_path: Path) -> None:
    import os

    write_bundle(tmp_path / "b", manifest(), MODEL)
    with pytest.raises(BundleError, match="over the cap of 100: refused .raise --max-model-bytes"):
        verify_bundle(tmp_path / "b", max_model_bytes=100)
    (tmp_path / "b" / MANIFEST_FILE).unlink()
    os.mkfifo(tmp_path / "b" / MANIFEST_FILE)
    with pytest.raises(BundleError, match="not a regular file"):
        read_manifest(tmp_path / "b")


def test_verified_bundle_carries_the_bytes_it_checked(tmp_path: Path) -> None:
    bundle = verify_bundle(write_bundle(tmp_path / "b", manifest(), MODEL).path)
    (tmp_path / "b" / MODEL_FILE).write_bytes(b"changed after the check")
    assert bundle.verified_model == MODEL and bundle.model_bytes() == MODEL


def test_a_key_rotation_trusts_a_folder_of_keys(tmp_path: Path) -> None:
    old, new, other = (tmp_path / n for n in ("old", "new", "other"))
    for folder in (old, new, other):
        generate_keys(folder / "k.key", folder / "k.pub")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    for name, folder in (("old", old), ("new", new)):
        (trusted / f"{name}.pub").write_bytes((folder / "k.pub").read_bytes())
    (trusted / "README").write_text("not a key: ignored")
    keys = load_public_keys(trusted)
    assert len(keys) == 2 and load_public_keys(old / "k.pub")[0] is not None
    for folder in (old, new):
        signed = write_bundle(
            tmp_path / f"b-{folder.name}",
            manifest(),
            MODEL,
            private_key=load_private_key(folder / "k.key"),
        )
        assert verify_bundle(signed.path, public_key=keys).manifest.signature is not None
    foreign = write_bundle(
        tmp_path / "b-other", manifest(), MODEL, private_key=load_private_key(other / "k.key")
    )
    with pytest.raises(BundleError, match="signature does not verify with key .*, "):
        verify_bundle(foreign.path, public_key=keys)
    with pytest.raises(BundleError, match=r"no public key \(\*\.pub\) in .*: put the .pub file"):
        load_public_keys(tmp_path / "b-old")


def test_trust_policy_checks_announced_manifests_before_any_model(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    signed = write_bundle(tmp_path / "s", manifest(), MODEL, private_key=load_private_key(private))
    unsigned = write_bundle(tmp_path / "u", manifest(), MODEL)
    strict = TrustPolicy(keys=(load_public_key(public),))
    assert strict.verify_manifest(signed.manifest.to_dict(), what="x").version == "20240610120000"
    with pytest.raises(BundleError, match="announcement 1 is unsigned and a public key"):
        strict.verify_manifest(unsigned.manifest.to_dict(), what="announcement 1")
    lax = TrustPolicy(keys=(load_public_key(public),), allow_unsigned=True)
    lax.verify_manifest(unsigned.manifest.to_dict(), what="announcement 1")
    tampered = dict(signed.manifest.to_dict(), labels=list("abcdefghij"))
    with pytest.raises(BundleError, match="signature does not verify"):
        lax.verify_manifest(tampered, what="announcement 1")  # signed ones still must verify
    with pytest.raises(BundleError, match="malformed field"):
        strict.verify_manifest({"name": "x"}, what="announcement 1")

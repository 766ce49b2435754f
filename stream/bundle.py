"""Model bundle format: a folder holding ``model.tflite`` and ``manifest.json``.

The manifest describes everything the agent needs to run the model without TensorFlow
(input/output spec with quantization parameters, preprocessing, labels), the metrics the
trainer measured, the model file's sha256 and an optional Ed25519 signature over the
manifest (which covers the model through its sha256). See docs/wire-format.md.

``cryptography`` is imported only by the functions that handle keys and signatures (an
agent without ``--public-key`` never imports it), and numpy (through
:mod:`stream.preprocessing`) only when a manifest is parsed: importing this module for its
names costs nothing at an agent's start-up. Key files are :mod:`stream.keys`; files are read
with :func:`stream.bounded.read_bounded`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# Bounded reading (stream/bounded.py) and the key files (stream/keys.py) lived here:
# re-exported for this module's importers.
from stream.bounded import read_bounded as read_bounded
from stream.exceptions import BundleError
from stream.keys import generate_keys as generate_keys
from stream.keys import key_id as key_id
from stream.keys import load_private_key as load_private_key
from stream.keys import load_public_key as load_public_key
from stream.keys import load_public_keys as load_public_keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from stream.preprocessing import Preprocessing
    from stream.reference import Reference

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
Variant = Literal["float32", "float16", "dynamic", "int8"]
VARIANTS: tuple[Variant, ...] = ("float32", "float16", "dynamic", "int8")
Task = Literal["image-classification", "sequence-classification"]
#: A manifest is a few KB: a larger ``manifest.json`` is refused unread.
MAX_MANIFEST_BYTES = 1 << 20
#: The default hard cap on a model file (the agent's ``--max-model-bytes``): a device has
#: 0.5-4 GB and holds two models plus a test load; the largest edge models are ~100 MB.
DEFAULT_MAX_MODEL_BYTES = 256 << 20
MODEL_CAP_FIX = "raise --max-model-bytes if such models are expected"


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """Shape (None for the batch dimension), dtype and quantization of one tensor."""

    shape: list[int | None]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(
            shape=[None if d is None else int(d) for d in data["shape"]],
            dtype=str(data["dtype"]),
            scale=float(data.get("scale", 0.0)),
            zero_point=int(data.get("zero_point", 0)),
        )


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The ``manifest.json`` of a bundle."""

    name: str
    version: str
    variant: str
    task: str
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    labels: list[str]
    model_sha256: str = ""
    model_size: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    #: False when the model failed its first invoke under the default (XNNPACK) delegates
    #: and must run without them.
    use_default_delegates: bool = True
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    signature: dict[str, str] | None = None
    #: The training data's reference statistics (docs/wire-format.md); None in bundles
    #: written before they existed, and then left out of the JSON (and of the signed bytes).
    reference: Reference | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        if self.reference is None:
            del data["reference"]
        else:
            data["reference"] = self.reference.to_dict()
        return data

    def signed_payload(self) -> bytes:
        """The canonical bytes a signature covers: the manifest without its signature."""
        data = self.to_dict()
        data.pop("signature", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        from stream.preprocessing import preprocessing_from_dict

        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                variant=str(data["variant"]),
                task=str(data["task"]),
                input=TensorSpec.from_dict(data["input"]),
                output=TensorSpec.from_dict(data["output"]),
                preprocessing=preprocessing_from_dict(data["preprocessing"]),
                labels=[str(x) for x in data["labels"]],
                model_sha256=str(data.get("model_sha256", "")),
                model_size=int(data.get("model_size", 0)),
                metrics=dict(data.get("metrics", {})),
                use_default_delegates=bool(data.get("use_default_delegates", True)),
                created_at=str(data.get("created_at", "")),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
                signature=data.get("signature"),
                reference=_reference(data),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            msg = f"manifest is missing or has a malformed field: {exc!r}"
            raise BundleError(msg) from exc


def _reference(data: dict[str, Any]) -> Reference | None:
    """The optional ``reference``, checked against the preprocessing's kind and channels."""
    from stream.preprocessing import preprocessing_from_dict
    from stream.reference import Reference

    raw = data.get("reference")
    if raw is None:
        return None
    reference = Reference.from_dict(raw)
    prep = preprocessing_from_dict(data["preprocessing"])
    reference.check_fits(prep.kind, prep.channels)
    return reference


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk: its folder, its manifest and the model bytes."""

    path: Path
    manifest: Manifest
    #: The model bytes :func:`verify_bundle` checked (None for a bundle only written):
    #: whoever loads the model uses these, never a second read of a file that may change.
    verified_model: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def model_bytes(self) -> bytes:
        if self.verified_model is not None:
            return self.verified_model
        return read_bounded(self.model_path, max_bytes=DEFAULT_MAX_MODEL_BYTES, what="model")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_version() -> str:
    """A default version string that sorts in time order: ``YYYYMMDDHHMMSS``."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def sign_manifest(manifest: Manifest, private_key: Ed25519PrivateKey) -> Manifest:
    unsigned = replace(manifest, signature=None)
    value = private_key.sign(unsigned.signed_payload())
    return replace(
        unsigned,
        signature={
            "algorithm": "ed25519",
            "key_id": key_id(private_key.public_key()),
            "value": base64.b64encode(value).decode(),
        },
    )


# --------------------------------------------------------------------- read / write


def write_bundle(
    directory: Path,
    manifest: Manifest,
    model: bytes,
    *,
    private_key: Ed25519PrivateKey | None = None,
) -> Bundle:
    """Write ``model.tflite`` and ``manifest.json`` atomically into ``directory``.

    The manifest's sha256 and size are filled from ``model``; with ``private_key`` the
    manifest is signed.
    """
    manifest = replace(
        manifest,
        model_sha256=sha256_hex(model),
        model_size=len(model),
        created_at=manifest.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        signature=None,
    )
    if private_key is not None:
        manifest = sign_manifest(manifest, private_key)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Bundle(directory, manifest)


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_FILE
    try:
        raw = read_bounded(path, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
    except FileNotFoundError as exc:
        msg = f"{path} not found: a bundle folder holds {MODEL_FILE} and {MANIFEST_FILE}"
        raise BundleError(msg) from exc
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8
        msg = f"{path} is not valid JSON ({exc}); re-export the bundle"
        raise BundleError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{path} must hold a JSON object"
        raise BundleError(msg)
    return Manifest.from_dict(data)


def verify_bundle(
    directory: Path,
    *,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
    require_signature: bool | None = None,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> Bundle:
    """Read a bundle and check its model hash and (when keys are given) its signature.

    ``public_key`` is one key or several (the trusted keys during a key rotation: the
    signature's ``key_id`` picks one). With a key, unsigned bundles are refused unless
    ``require_signature`` is False. The model file is read once, bounded by its manifest's
    ``model_size`` and ``max_model_bytes``; the bytes that were checked are returned in
    :attr:`Bundle.verified_model`. Raises :class:`BundleError` saying what failed.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    model_path = directory / MODEL_FILE
    try:
        model = read_bounded(
            model_path,
            max_bytes=max_model_bytes,
            what="model",
            expected_size=manifest.model_size or None,
            fix=MODEL_CAP_FIX,
        )
    except OSError as exc:
        msg = f"cannot read {model_path}: {exc}"
        raise BundleError(msg) from exc
    digest = sha256_hex(model)
    if digest != manifest.model_sha256:
        msg = (
            f"{model_path} sha256 {digest[:12]}... does not match the manifest's "
            f"{manifest.model_sha256[:12]}...: the model file was altered or truncated"
        )
        raise BundleError(msg)
    verify_manifest(
        manifest,
        public_key=public_key,
        require_signature=require_signature,
        what=f"bundle {directory}",
    )
    return Bundle(directory, manifest, verified_model=model)


def verify_manifest(
    manifest: Manifest,
    *,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
    require_signature: bool | None = None,
    what: str = "bundle",
) -> None:
    """Check the manifest's signature (it covers the model through ``model_sha256``);
    :class:`BundleError` naming ``what`` if it is missing while required, or wrong."""
    keys = _as_key_list(public_key)
    if require_signature is None:
        require_signature = bool(keys)
    if manifest.signature is None:
        if require_signature:
            msg = f"{what} is unsigned and a public key is configured: refused"
            raise BundleError(msg)
    elif keys:
        _check_signature(what, manifest, keys)


@dataclass(frozen=True, kw_only=True)
class TrustPolicy:
    """Which bundles may run: signed by one of ``keys`` (a key rotation trusts two), or
    also unsigned ones with ``allow_unsigned``; models of at most ``max_model_bytes``."""

    keys: tuple[Ed25519PublicKey, ...] = ()
    allow_unsigned: bool = False
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES

    def verify_bundle(self, directory: Path) -> Bundle:
        return verify_bundle(
            directory,
            public_key=self.keys,
            require_signature=not self.allow_unsigned,
            max_model_bytes=self.max_model_bytes,
        )

    def verify_manifest(self, data: dict[str, Any], *, what: str) -> Manifest:
        """An announced manifest (before its model is fetched): parsed and signature-checked."""
        manifest = Manifest.from_dict(data)
        verify_manifest(
            manifest, public_key=self.keys, require_signature=not self.allow_unsigned, what=what
        )
        return manifest


def _as_key_list(
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
) -> list[Ed25519PublicKey]:
    if public_key is None:
        return []
    if isinstance(public_key, Sequence):
        return list(public_key)
    return [public_key]


def _check_signature(what: str, manifest: Manifest, keys: list[Ed25519PublicKey]) -> None:
    from cryptography.exceptions import InvalidSignature

    signature = manifest.signature if isinstance(manifest.signature, dict) else {}
    named = [k for k in keys if key_id(k) == signature.get("key_id")]
    for key in named or keys:
        try:
            value = base64.b64decode(signature["value"], validate=True)
            key.verify(value, manifest.signed_payload())
        except (InvalidSignature, KeyError, ValueError, TypeError):
            continue
        return
    ids = ", ".join(key_id(k) for k in keys)
    msg = (
        f"{what} signature does not verify with key {ids}: the manifest was "
        "altered or signed by another key"
    )
    raise BundleError(msg)

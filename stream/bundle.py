"""Model bundle format: a folder holding ``model.tflite`` and ``manifest.json``.

The manifest describes everything the agent needs to run the model without TensorFlow
(input/output spec with quantization parameters, preprocessing, labels), the metrics the
trainer measured, the model file's sha256 and an optional Ed25519 signature over the
manifest (which covers the model through its sha256). See docs/wire-format.md.

``cryptography`` is imported only by the functions that handle keys and signatures (an
agent without ``--public-key`` never imports it), and numpy (through
:mod:`stream.preprocessing`) only when a manifest is parsed: importing this module for its
names costs nothing at an agent's start-up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stream.exceptions import BundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from stream.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
Variant = Literal["float32", "float16", "dynamic", "int8"]
VARIANTS: tuple[Variant, ...] = ("float32", "float16", "dynamic", "int8")
Task = Literal["image-classification", "sequence-classification"]


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
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
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            msg = f"manifest is missing or has a malformed field: {exc!r}"
            raise BundleError(msg) from exc


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk: its folder, its manifest and the model bytes."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def model_bytes(self) -> bytes:
        return self.model_path.read_bytes()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_version() -> str:
    """A default version string that sorts in time order: ``YYYYMMDDHHMMSS``."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


# ----------------------------------------------------------------------------- keys


def generate_keys(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM files (private key mode 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode only applies to a new file: an overwritten key must not keep 0644.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read private key {path}: {exc}; make one with `edgeinfer keys generate`"
        raise BundleError(msg) from exc
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{path} is not an Ed25519 private key; make one with `edgeinfer keys generate`"
        raise BundleError(msg)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read public key {path}: {exc}; pass the .pub file from `keys generate`"
        raise BundleError(msg) from exc
    if not isinstance(key, Ed25519PublicKey):
        msg = f"{path} is not an Ed25519 public key"
        raise BundleError(msg)
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)[:16]


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
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        msg = f"{path} not found: a bundle folder holds {MODEL_FILE} and {MANIFEST_FILE}"
        raise BundleError(msg) from exc
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8
        msg = f"{path} is not valid JSON ({exc}); re-export the bundle"
        raise BundleError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{path} must hold a JSON object"
        raise BundleError(msg)
    return Manifest.from_dict(data)


def verify_bundle(
    directory: Path,
    *,
    public_key: Ed25519PublicKey | None = None,
    require_signature: bool | None = None,
) -> Bundle:
    """Read a bundle and check its model hash and (when a key is given) its signature.

    With a public key, unsigned bundles are refused unless ``require_signature`` is False.
    Raises :class:`BundleError` saying what failed.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    model_path = directory / MODEL_FILE
    try:
        model = model_path.read_bytes()
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
    if require_signature is None:
        require_signature = public_key is not None
    if manifest.signature is None:
        if require_signature:
            msg = f"bundle {directory} is unsigned and a public key is configured: refused"
            raise BundleError(msg)
    elif public_key is not None:
        from cryptography.exceptions import InvalidSignature

        try:
            sig = base64.b64decode(manifest.signature["value"], validate=True)
            public_key.verify(sig, manifest.signed_payload())
        except (InvalidSignature, KeyError, ValueError, TypeError) as exc:
            msg = (
                f"bundle {directory} signature does not verify with key "
                f"{key_id(public_key)}: the manifest was altered or signed by another key"
            )
            raise BundleError(msg) from exc
    return Bundle(directory, manifest)

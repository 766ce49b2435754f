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
import functools
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from stream.exceptions import BundleError

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
_CHUNK = 1 << 20
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


def read_bounded(
    path: Path,
    *,
    max_bytes: int,
    what: str,
    expected_size: int | None = None,
    fix: str = "",
) -> bytes:
    """The bytes of the regular file ``path``: at most ``max_bytes``, and exactly
    ``expected_size`` when given; :class:`BundleError` otherwise.

    Nothing unbounded is read: the file is opened without blocking (a FIFO cannot hang the
    reader) and checked on the open descriptor (a device such as ``/dev/zero``, a FIFO, a
    socket or a directory, also behind a symlink, is refused before a byte is read); the cap
    is enforced while reading, so a file that grows meanwhile is cut off and refused.
    A missing file raises :class:`FileNotFoundError`; ``fix`` is added to the message of a
    file over the cap.
    """
    hint = f" ({fix})" if fix else ""
    limit = max_bytes if expected_size is None else min(expected_size, max_bytes)
    if expected_size is not None and expected_size > max_bytes:
        msg = (
            f"{what} {path} is announced as {expected_size} bytes, over the cap of {max_bytes}: "
            f"refused{hint}"
        )
        raise BundleError(msg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        msg = f"cannot read {what} {path}: {exc.strerror or exc}"
        raise BundleError(msg) from exc
    mode = os.fstat(fd)
    if not stat.S_ISREG(mode.st_mode):
        os.close(fd)
        msg = f"{what} {path} is not a regular file (a device, FIFO, socket or folder): refused"
        raise BundleError(msg)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if expected_size is not None and mode.st_size != expected_size:
            raise BundleError(_size_mismatch(what, path, mode.st_size, expected_size))
        if mode.st_size > limit:
            msg = f"{what} {path} is {mode.st_size} bytes, over the cap of {limit}: refused{hint}"
            raise BundleError(msg)
        chunks: list[bytes] = []
        total = 0
        while chunk := fh.read(max(0, min(_CHUNK, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                msg = f"{what} {path} grew beyond {limit} bytes while read: refused{hint}"
                raise BundleError(msg)
    data = b"".join(chunks)
    if expected_size is not None and len(data) != expected_size:
        raise BundleError(_size_mismatch(what, path, len(data), expected_size))
    return data


def _size_mismatch(what: str, where: object, size: int, expected: int) -> str:
    return (
        f"{what} {where} is {size} bytes, which does not match the manifest's model_size "
        f"{expected}: refused (altered or truncated)"
    )


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

    hint = "make one with `edgeinfer keys generate`"
    load = functools.partial(serialization.load_pem_private_key, password=None)
    key = _read_key(path, load, Ed25519PrivateKey, "private key", hint, f"; {hint}")
    return cast("Ed25519PrivateKey", key)


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    hint = "pass the .pub file from `keys generate`"
    load = serialization.load_pem_public_key
    return cast("Ed25519PublicKey", _read_key(path, load, Ed25519PublicKey, "public key", hint, ""))


def _read_key(
    path: Path,
    load: Callable[[bytes], object],
    kind: type,
    what: str,
    unreadable_hint: str,
    wrong_kind_hint: str,
) -> object:
    """``load(path's bytes)``, which must give a ``kind``; errors name the path and the fix."""
    try:
        key = load(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read {what} {path}: {exc}; {unreadable_hint}"
        raise BundleError(msg) from exc
    if not isinstance(key, kind):
        msg = f"{path} is not an Ed25519 {what}{wrong_kind_hint}"
        raise BundleError(msg)
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """The trusted keys at ``path``: one PEM file, or a folder whose ``*.pub`` files are all
    trusted (during a key rotation, the old and the new key)."""
    path = Path(path)
    if not path.is_dir():
        return [load_public_key(path)]
    files = sorted(p for p in path.glob("*.pub") if not p.name.startswith("."))
    if not files:
        msg = (
            f"no public key (*.pub) in {path}: put the .pub file of `edgeinfer keys generate` there"
        )
        raise BundleError(msg)
    return [load_public_key(p) for p in files]


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

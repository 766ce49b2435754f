"""The model registry directory and the ``models`` topic announcements.

Registry layout: ``ROOT/<model-name>/<version>/`` holds a bundle (``model.tflite`` +
``manifest.json``); ``ROOT/<model-name>/pinned`` (optional) names the version agents must
run. Publishing copies a verified bundle in atomically and announces it on the ``models``
topic, keyed by the model name, with the model inline (base64) or, when the message would
be over the size limit, a ``file://`` URI of the registry copy.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stream import topics
from stream.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    Bundle,
    generate_keys,
    key_id,
    load_public_key,
    read_manifest,
    sha256_hex,
    verify_bundle,
)
from stream.exceptions import BrokerError, BundleError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Announcements larger than this carry a URI instead of the model (Kafka's default
#: message limit is 1 MB).
DEFAULT_INLINE_LIMIT = 900_000
PINNED_FILE = "pinned"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _check_component(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value) or value in (".", ".."):
        msg = (
            f"model {kind} {value!r} cannot be a registry folder name: use letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit"
        )
        raise BundleError(msg)
    return value


def version_key(version: str) -> tuple[Any, ...]:
    """Natural order: ``2`` < ``10``, ``1.2`` < ``1.10``, timestamps in time order."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


_version_key = version_key  # the old private name, still imported elsewhere


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Registry:
    """A registry directory of bundles (see the module docstring for the layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _is_visible(p))

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (natural order)."""
        folder = self.root / _check_component("name", name)
        if not folder.is_dir():
            return []
        found = [
            p.name
            for p in folder.iterdir()
            if p.is_dir() and _is_visible(p) and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=version_key)

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def bundle_path(self, name: str, version: str) -> Path:
        """Where version ``version`` of ``name`` lives (whether or not it exists)."""
        return self.root / _check_component("name", name) / _check_component("version", version)

    def pinned(self, name: str) -> str | None:
        path = self.root / _check_component("name", name) / PINNED_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def pin(self, name: str, version: str) -> None:
        """Make agents run ``version`` of ``name`` (it must be published)."""
        if not (self.bundle_path(name, version) / MANIFEST_FILE).is_file():
            have = ", ".join(self.versions(name)) or "none"
            msg = f"cannot pin {name} to {version}: not in {self.root} (published: {have})"
            raise BundleError(msg)
        _write_text_atomic(self.root / name / PINNED_FILE, version + "\n")
        logger.info('pinned model="%s" version="%s"', name, version)

    def unpin(self, name: str) -> None:
        path = self.root / _check_component("name", name) / PINNED_FILE
        path.unlink(missing_ok=True)

    def current(self, name: str) -> str | None:
        """The version agents should run: the pinned one, else the latest."""
        return self.pinned(name) or self.latest(name)

    def publish(self, bundle_dir: Path | str) -> Path:
        """Verify ``bundle_dir`` (model hash) and copy it to ``ROOT/<name>/<version>/``.

        Atomic (copy to a hidden sibling, then rename). Publishing the same model again is
        a no-op; another model under an existing version is refused.
        """
        bundle = verify_bundle(Path(bundle_dir), require_signature=False)
        manifest = bundle.manifest
        dest = self.bundle_path(manifest.name, manifest.version)
        if dest.exists():
            existing = read_manifest(dest)
            if existing.model_sha256 == manifest.model_sha256:
                logger.info('already published model="%s" version="%s"', *_nv(manifest))
                return dest
            msg = (
                f"{manifest.name} version {manifest.version} is already in {self.root} with "
                "another model: give the new bundle a new version"
            )
            raise BundleError(msg)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=dest.parent))
        try:
            for file in (MODEL_FILE, MANIFEST_FILE):
                shutil.copy2(bundle.path / file, tmp / file)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info('published model="%s" version="%s" path="%s"', *_nv(manifest), dest)
        return dest


def _nv(manifest: Any) -> tuple[str, str]:
    return manifest.name, manifest.version


def _is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


# ------------------------------------------------------------------ announcements


@dataclass(frozen=True, kw_only=True)
class Announcement:
    """A ``models`` topic message: the manifest plus the model inline or by URI."""

    name: str
    version: str
    manifest: dict[str, Any]
    model_b64: str | None = None
    uri: str | None = None


def announcement_value(bundle: Bundle, *, inline_limit: int = DEFAULT_INLINE_LIMIT) -> bytes:
    """The JSON value announcing ``bundle``: model inline, or a URI when over the limit."""
    manifest = bundle.manifest.to_dict()
    base = {"name": bundle.manifest.name, "version": bundle.manifest.version, "manifest": manifest}
    model = bundle.model_bytes()
    inline = dict(base, model_b64=base64.b64encode(model).decode("ascii"))
    value = json.dumps(inline, separators=(",", ":")).encode()
    if len(value) <= inline_limit:
        return value
    by_ref = dict(base, uri=bundle.path.resolve().as_uri())
    return json.dumps(by_ref, separators=(",", ":")).encode()


def parse_announcement(value: bytes) -> Announcement:
    """Parse a ``models`` topic value; :class:`BundleError` if it is malformed."""
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        msg = f"model announcement is not JSON: {exc}"
        raise BundleError(msg) from exc
    if not isinstance(data, dict):
        msg = "model announcement must be a JSON object"
        raise BundleError(msg)
    missing = [k for k in ("name", "version", "manifest") if k not in data]
    if missing:
        msg = f"model announcement lacks {', '.join(missing)}"
        raise BundleError(msg)
    if not isinstance(data["manifest"], dict):
        msg = "model announcement's manifest must be a JSON object"
        raise BundleError(msg)
    model_b64, uri = data.get("model_b64"), data.get("uri")
    if (model_b64 is None) == (uri is None):
        msg = "model announcement must carry exactly one of model_b64 and uri"
        raise BundleError(msg)
    if not isinstance(model_b64 or uri, str):
        msg = "model announcement's model_b64/uri must be a string"
        raise BundleError(msg)
    name, version = str(data["name"]), str(data["version"])
    if data["manifest"].get("name") != name or data["manifest"].get("version") != version:
        msg = f"model announcement {name}@{version} does not match its manifest's name/version"
        raise BundleError(msg)
    return Announcement(
        name=_check_component("name", name),
        version=_check_component("version", version),
        manifest=data["manifest"],
        model_b64=model_b64,
        uri=uri,
    )


def _model_from_uri(uri: str) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        msg = f"model URI {uri!r} is not supported: only file:// URIs (a shared registry)"
        raise BundleError(msg)
    path = Path(unquote(parsed.path))
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        return path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the announced model at {path}: {exc}; is the registry mounted?"
        raise BundleError(msg) from exc


def materialize(announcement: Announcement, dest_dir: Path | str) -> Path:
    """Write the announced bundle into ``dest_dir`` (atomically) and check its model hash.

    The signature is not checked here: the agent verifies it with its public key.
    """
    if announcement.model_b64 is not None:
        try:
            model = base64.b64decode(announcement.model_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            msg = f"model announcement {announcement.name}@{announcement.version}: bad base64"
            raise BundleError(msg) from exc
    elif announcement.uri is not None:
        model = _model_from_uri(announcement.uri)
    else:
        msg = "model announcement carries neither model_b64 nor uri"
        raise BundleError(msg)
    expected = str(announcement.manifest.get("model_sha256", ""))
    if sha256_hex(model) != expected:
        msg = (
            f"announced model {announcement.name}@{announcement.version} does not match its "
            "manifest's sha256: refused"
        )
        raise BundleError(msg)
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model)
        (tmp / MANIFEST_FILE).write_text(json.dumps(announcement.manifest, indent=2) + "\n")
        verify_bundle(tmp, require_signature=False)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def announce(
    settings: KafkaSettings,
    bundle_dir: Path | str,
    *,
    topic: str = topics.MODELS,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
    timeout_s: float = 30.0,
) -> Announcement:
    """Produce the announcement of a bundle to ``topic`` keyed by the model name."""
    from kafka.errors import KafkaError

    from stream.kafka import error_text, make_producer

    bundle = verify_bundle(Path(bundle_dir), require_signature=False)
    value = announcement_value(bundle, inline_limit=inline_limit)
    producer = make_producer(settings)
    try:
        future = producer.send(topic, value=value, key=bundle.manifest.name.encode())
        future.get(timeout=timeout_s)
    except KafkaError as exc:
        msg = f"announcing {bundle.manifest.name} on {topic!r} failed: {error_text(exc)}"
        raise BrokerError(msg) from exc
    finally:
        producer.close(timeout=timeout_s)
    logger.info(
        'announced model="%s" version="%s" topic="%s" bytes=%d',
        bundle.manifest.name,
        bundle.manifest.version,
        topic,
        len(value),
    )
    return parse_announcement(value)


# ------------------------------------------------------------------ CLI handlers


def registry_root(flag: str | None) -> Path:
    """``--registry``, else ``EDGE_REGISTRY``, else ``./registry``."""
    from stream.env import edge_environment

    return Path(flag or edge_environment().get("registry") or "registry")


def run_keys_generate(args: argparse.Namespace) -> int:
    """``edgeinfer keys generate --out DIR``."""
    out = Path(args.out)
    private, public = out / "edgeinfer.key", out / "edgeinfer.pub"
    if not args.force and (private.exists() or public.exists()):
        msg = f"{private} or {public} already exists: pass --force to replace the key pair"
        raise BundleError(msg)
    generate_keys(private, public)
    print(f"private key: {private} (keep it secret; sign bundles with it)")
    print(f"public key:  {public} (give it to agents: --public-key)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """``edgeinfer verify BUNDLE [--key PUB]``: prints OK or the failure, exit 1 on failure."""
    try:
        key = load_public_key(Path(args.key)) if args.key else None
        bundle = verify_bundle(Path(args.bundle), public_key=key)
    except BundleError as exc:
        print(f"FAILED: {exc}")
        return 1
    m = bundle.manifest
    if key is not None:
        signed = f"signature OK (key {key_id(key)})"
    elif m.signature:
        signed = f"signed by key {m.signature.get('key_id')} (not checked: pass --key)"
    else:
        signed = "unsigned"
    print(f"OK {m.name} {m.version} {m.variant} sha256={m.model_sha256[:16]} {signed}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    """``edgeinfer publish BUNDLE [--registry DIR] [--topic models] [--no-topic]``."""
    from stream.settings import settings_from_args

    bundle_dir = Path(args.bundle)
    key = load_public_key(Path(args.key)) if args.key else None
    verify_bundle(bundle_dir, public_key=key)
    dest = Registry(registry_root(args.registry)).publish(bundle_dir)
    print(f"registry: {dest}")
    if not args.no_topic:
        from stream.kafka import quiet_kafka_logs

        settings = settings_from_args(args)
        quiet_kafka_logs()
        ann = announce(settings, dest, topic=args.topic, inline_limit=args.inline_limit)
        how = "inline" if ann.model_b64 is not None else f"by reference {ann.uri}"
        print(f"announced {ann.name} {ann.version} on {args.topic!r} ({how})")
    return 0

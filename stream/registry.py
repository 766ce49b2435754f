"""The model registry directory and the ``models`` topic announcements.

Registry layout: ``ROOT/<model-name>/<version>/`` holds a bundle (``model.tflite`` +
``manifest.json``); ``ROOT/<model-name>/pinned`` (optional) names the version agents must
run. Entries that cannot be a version (``copy of 1/``, a pin file naming no version) are
skipped with a warning, never fatal. Publishing copies a verified bundle in atomically and
announces it on the ``models`` topic, keyed by the model name, with the model inline
(base64) or, when the message would be over the size limit, a ``file://`` URI of the
registry copy. An announced URI is read only as a regular file or an http(s) object, and
never past the size its manifest states (``model_size``) or a hard cap.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stream import topics
from stream.bundle import (
    DEFAULT_MAX_MODEL_BYTES,
    MANIFEST_FILE,
    MODEL_CAP_FIX,
    MODEL_FILE,
    Bundle,
    generate_keys,
    key_id,
    load_public_keys,
    read_bounded,
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
#: A pin file holds one version name; anything longer is not a pin.
_MAX_PIN_BYTES = 256
#: How long an http(s) model download may take in all (a slow server cannot hold the
#: agent's model worker), and the socket timeout of each read.
HTTP_TIMEOUT_S = 120.0
_HTTP_READ_TIMEOUT_S = 15.0
_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def is_valid_component(value: str) -> bool:
    """Whether ``value`` can name a model or version folder (see :func:`_check_component`)."""
    return bool(_SAFE_NAME.match(value)) and value not in (".", "..")


def _check_component(kind: str, value: str) -> str:
    if not is_valid_component(value):
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
        """Published versions of ``name``, oldest first (natural order).

        A folder whose name cannot be a version (``copy of 1``) is skipped with a warning:
        odd entries never stop an agent that follows the registry.
        """
        folder = self.root / _check_component("name", name)
        if not folder.is_dir():
            return []
        found = []
        for p in folder.iterdir():
            if not (p.is_dir() and _is_visible(p) and (p / MANIFEST_FILE).is_file()):
                continue
            if not is_valid_component(p.name):
                logger.warning(
                    'skipping registry entry path="%s": its name cannot be a version (use '
                    "letters, digits, '.', '_', '+' or '-'; publish with `edgeinfer publish`)",
                    p,
                )
                continue
            found.append(p.name)
        return sorted(found, key=version_key)

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def bundle_path(self, name: str, version: str) -> Path:
        """Where version ``version`` of ``name`` lives (whether or not it exists)."""
        return self.root / _check_component("name", name) / _check_component("version", version)

    def pinned(self, name: str) -> str | None:
        """The version in ``ROOT/<name>/pinned``, or None; a pin file that is unreadable or
        names no valid version is ignored with a warning."""
        path = self.root / _check_component("name", name) / PINNED_FILE
        try:
            raw = read_bounded(path, max_bytes=_MAX_PIN_BYTES, what="pin file")
        except FileNotFoundError:
            return None
        except BundleError as exc:
            logger.warning('ignoring the pin file path="%s" error="%s"', path, exc)
            return None
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return None
        if not is_valid_component(text):
            logger.warning(
                'ignoring the pin file path="%s": %r is not a version; write it with '
                "`edgeinfer rollback --to VERSION`",
                path,
                text[:64],
            )
            return None
        return text

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
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
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
    size = data["manifest"].get("model_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        msg = (
            f"model announcement {name}@{version} does not state the model's size "
            "(manifest model_size): refused; publish with `edgeinfer publish`"
        )
        raise BundleError(msg)
    return Announcement(
        name=_check_component("name", name),
        version=_check_component("version", version),
        manifest=data["manifest"],
        model_b64=model_b64,
        uri=uri,
    )


def announced_size(announcement: Announcement) -> int:
    """The model size the announcement states (checked by :func:`parse_announcement`)."""
    return int(announcement.manifest["model_size"])


def read_model_uri(
    uri: str,
    *,
    size: int,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> bytes:
    """The model at ``uri``: exactly ``size`` bytes (at most ``max_bytes``), or
    :class:`BundleError`.

    ``file://`` names a regular file or a bundle folder (its ``model.tflite``, as
    :func:`announcement_value` announces a registry copy); devices, FIFOs and sockets are
    refused unread. ``http://`` and ``https://`` objects are downloaded within
    ``timeout_s`` in all, redirects only to http(s). The size is enforced while reading.
    """
    if size <= 0:
        msg = f"the model at {uri!r} has no announced size: refused"
        raise BundleError(msg)
    if size > max_bytes:
        msg = (
            f"the model at {uri!r} is announced as {size} bytes, over the cap of {max_bytes}: "
            f"refused ({MODEL_CAP_FIX})"
        )
        raise BundleError(msg)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return _read_file_uri(parsed.netloc, unquote(parsed.path), uri=uri, size=size)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return _read_http(uri, size=size, timeout_s=timeout_s)
    msg = (
        f"model URI {uri!r} is not supported: only file:// (a shared registry or a regular "
        "file) and http(s):// URIs"
    )
    raise BundleError(msg)


def _read_file_uri(host: str, raw_path: str, *, uri: str, size: int) -> bytes:
    if host not in ("", "localhost") or not raw_path.startswith("/") or "\x00" in raw_path:
        msg = f"model URI {uri!r} must name an absolute local path (file:///...)"
        raise BundleError(msg)
    path = Path(raw_path)
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        return read_bounded(path, max_bytes=size, what="announced model", expected_size=size)
    except OSError as exc:
        msg = f"cannot read the announced model at {path}: {exc}; is the registry mounted?"
        raise BundleError(msg) from exc


def _read_http(uri: str, *, size: int, timeout_s: float) -> bytes:
    import http.client
    import urllib.error
    import urllib.request  # here: an agent that never downloads does not import it

    class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, *args: Any) -> Any:
            newurl = args[-1]
            if urlparse(newurl).scheme not in ("http", "https"):
                text = f"the model download redirects to {newurl!r}: only http(s) is followed"
                raise BundleError(text)
            return super().redirect_request(req, fp, code, *args)

    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(HttpOnlyRedirects())
    chunks: list[bytes] = []
    total = 0
    try:
        with opener.open(uri, timeout=min(timeout_s, _HTTP_READ_TIMEOUT_S)) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.strip() != str(size):
                msg = f"{uri} has Content-Length {length.strip()}, the announcement {size} bytes"
                raise BundleError(msg)
            while chunk := resp.read1(min(_CHUNK, size + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > size:
                    msg = f"{uri} sends more than the announced {size} bytes: refused"
                    raise BundleError(msg)
                if time.monotonic() > deadline:
                    msg = f"downloading {uri} took over {timeout_s:.0f} s: refused"
                    raise BundleError(msg)
    except urllib.error.HTTPError as exc:
        msg = f"cannot download the announced model {uri}: HTTP {exc.code} {exc.reason}"
        raise BundleError(msg) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        msg = f"cannot download the announced model {uri}: {exc}"
        raise BundleError(msg) from exc
    if total != size:
        msg = f"{uri} sent {total} bytes, the announcement states {size}: refused"
        raise BundleError(msg)
    return b"".join(chunks)


def _announced_model(announcement: Announcement, *, max_bytes: int) -> bytes:
    size = announced_size(announcement)
    what = f"model announcement {announcement.name}@{announcement.version}"
    if announcement.model_b64 is not None:
        if len(announcement.model_b64) > 4 * (max_bytes // 3 + 1):
            msg = f"{what}: the inline model is over the cap of {max_bytes} bytes: refused"
            msg += f" ({MODEL_CAP_FIX})"
            raise BundleError(msg)
        try:
            model = base64.b64decode(announcement.model_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            msg = f"{what}: bad base64"
            raise BundleError(msg) from exc
        if len(model) != size:
            msg = f"{what}: the inline model is {len(model)} bytes, its manifest says {size}"
            raise BundleError(msg)
        return model
    if announcement.uri is not None:
        return read_model_uri(announcement.uri, size=size, max_bytes=max_bytes)
    msg = f"{what} carries neither model_b64 nor uri"
    raise BundleError(msg)


def materialize(
    announcement: Announcement,
    dest_dir: Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    verify: Callable[[Path], Any] | None = None,
) -> Path:
    """Write the announced bundle into ``dest_dir`` (atomically) once it is checked.

    The model is read bounded (see :func:`read_model_uri`), must match the manifest's
    sha256, and the bundle is written to a hidden sibling folder and checked there with
    ``verify`` (the agent passes its signature check; default: the model hash only). Only
    then does it replace ``dest_dir``: a refused announcement never deletes the copy it
    would replace.
    """
    model = _announced_model(announcement, max_bytes=max_bytes)
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
        if verify is None:
            verify_bundle(tmp, require_signature=False, max_model_bytes=max_bytes)
        else:
            verify(tmp)
        _replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest``; an existing ``dest`` is moved aside first and only
    deleted once ``new`` is in place."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    os.replace(dest, old / "bundle")
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(old / "bundle", dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


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
        keys = load_public_keys(Path(args.key)) if args.key else None
        bundle = verify_bundle(Path(args.bundle), public_key=keys)
    except BundleError as exc:
        print(f"FAILED: {exc}")
        return 1
    m = bundle.manifest
    if keys:
        signed = f"signature OK (key {', '.join(key_id(k) for k in keys)})"
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
    keys = load_public_keys(Path(args.key)) if args.key else None
    verify_bundle(bundle_dir, public_key=keys)
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

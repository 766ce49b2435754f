"""Model announcements on the ``models`` topic: building, parsing, bounded reading, writing.

An announcement is keyed by the model name and carries the bundle's manifest with the model
inline (base64) or, when the message would be over the size limit, a ``file://`` URI of the
registry copy. An announced URI is read only as a regular file or an http(s) object, and
never past the size its manifest states (``model_size``) or a hard cap; an announced bundle
replaces a local copy only once it is checked (:func:`materialize`). The registry directory
itself is :mod:`stream.registry`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stream import topics
from stream.bounded import read_bounded
from stream.bundle import (
    DEFAULT_MAX_MODEL_BYTES,
    MANIFEST_FILE,
    MODEL_CAP_FIX,
    MODEL_FILE,
    Bundle,
    sha256_hex,
    verify_bundle,
)
from stream.exceptions import BrokerError, BundleError
from stream.registry import check_component
from stream.rollout import NOBODY, Rollout, parse_rollout
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Announcements larger than this carry a URI instead of the model (Kafka's default
#: message limit is 1 MB).
DEFAULT_INLINE_LIMIT = 900_000
#: How long an http(s) model download may take in all (a slow server cannot hold the
#: agent's model worker), and the socket timeout of each read.
HTTP_TIMEOUT_S = 120.0
_HTTP_READ_TIMEOUT_S = 15.0
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Announcement:
    """A ``models`` topic message: the manifest plus the model inline or by URI."""

    name: str
    version: str
    manifest: dict[str, Any]
    model_b64: str | None = None
    uri: str | None = None
    #: The optional, unsigned ``rollout`` object as announced (see :mod:`stream.rollout`).
    rollout: Any = None


def announcement_value(
    bundle: Bundle, *, inline_limit: int = DEFAULT_INLINE_LIMIT, rollout: Rollout | None = None
) -> bytes:
    """The JSON value announcing ``bundle``: model inline, or a URI when over the limit;
    ``rollout`` adds the optional ``rollout`` field (:mod:`stream.rollout`)."""
    manifest = bundle.manifest.to_dict()
    base: dict[str, Any] = {
        "name": bundle.manifest.name,
        "version": bundle.manifest.version,
        "manifest": manifest,
    }
    if rollout is not None:
        base["rollout"] = rollout.to_dict()
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
        name=check_component("name", name),
        version=check_component("version", version),
        manifest=data["manifest"],
        model_b64=model_b64,
        uri=uri,
        rollout=data.get("rollout"),
    )


def announced_rollout(announcement: Announcement) -> Rollout | None:
    """The announcement's rollout (None: every agent adopts it); malformed:
    :data:`stream.rollout.NOBODY` (unsigned metadata may only delay adoption)."""
    if announcement.rollout is None:
        return None
    try:
        return parse_rollout(announcement.rollout)
    except BundleError as exc:
        logger.warning(
            'announced rollout ignored, version not adopted model="%s" version="%s" error="%s"',
            announcement.name,
            announcement.version,
            exc,
        )
        return NOBODY


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
    rollout: Rollout | None = None,
) -> Announcement:
    """Produce the announcement of a bundle to ``topic`` keyed by the model name."""
    from kafka.errors import KafkaError

    from stream.kafka import error_text, make_producer

    bundle = verify_bundle(Path(bundle_dir), require_signature=False)
    value = announcement_value(bundle, inline_limit=inline_limit, rollout=rollout)
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

"""Where the agent's models come from: a bundle folder, a registry directory, the ``models`` topic.

A :class:`ModelSource` lists the versions it can provide (oldest first, in the registry's
natural order), may name a pinned version, and hands out a local bundle folder for a
version. :class:`edge_agent.model_store.ModelStore` verifies the hash and signature,
test-loads in a child process and decides what to switch to; it hands the source its
:class:`~stream.bundle.TrustPolicy` (:attr:`ModelSource.trust`) so that a source that copies
bundles (the ``models`` topic) checks a copy before it replaces a verified one, and refuses
unsigned announcements as they arrive. ``refresh()`` is cheap and never blocks; the store
calls it between batches.

Why one module of this size: the three sources are small implementations of one
interface that the store treats alike; keeping them beside :class:`ModelSource` shows
the contract and all its implementations at once (the announcement format they share is
:mod:`stream.announcements`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path
from typing import Any

from stream.announcements import (
    Announcement,
    announced_rollout,
    materialize,
    parse_announcement,
)
from stream.bundle import MANIFEST_FILE, MODEL_FILE, TrustPolicy, read_manifest
from stream.exceptions import BundleError, EdgeInferError
from stream.registry import Registry, version_key
from stream.rollout import Rollout
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: A folder listing is trusted as unchanged only when its mtime is older than this (a
#: change within the same timestamp tick as the listing would otherwise be missed).
_MTIME_SLACK_NS = 1_000_000_000


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class ModelSource(ABC):
    """A place the agent takes models from (see the module docstring)."""

    #: Shown in logs and errors, e.g. ``registry /srv/registry (model digits)``.
    description: str
    #: The last problem the source met (unreadable manifest, broker away), for error messages.
    last_error: str | None = None
    #: What may be trusted (keys, unsigned or not, size cap): the model store's, see attach().
    trust: TrustPolicy = TrustPolicy()

    def attach(self, trust: TrustPolicy) -> None:
        """Called by the model store that reads this source, with its trust policy."""
        self.trust = trust

    def refresh(self) -> None:  # noqa: B027  sources without state need nothing
        """Pick up new versions (cheap, non-blocking)."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Available versions, oldest first."""

    def pinned(self) -> str | None:
        """The version the source says to run (the registry's pin file), if any."""
        return None

    def ready(self) -> bool:
        """True once the source has seen what it has to offer (the topic is read to its end)."""
        return True

    @abstractmethod
    def model_name(self) -> str | None:
        """The model's name when the source knows it (a bundle folder: from its manifest)."""

    def fingerprint(self, version: str) -> str:
        """Identifies the content of ``version``: a refusal is remembered for this content."""
        return version

    def rollout(self, version: str) -> Rollout | None:
        """Who adopts ``version`` (:mod:`stream.rollout`; unsigned); None: every agent."""
        return None

    @abstractmethod
    def fetch(self, version: str) -> Path:
        """A local bundle folder holding ``version``; :class:`BundleError` if it is gone."""

    def retain(self, versions: Collection[str]) -> None:  # noqa: B027
        """Hint: the store uses ``versions``; cached copies of others may be deleted."""

    def close(self) -> None:  # noqa: B027
        """Release what the source holds (threads, consumers)."""


class BundleDirSource(ModelSource):
    """One bundle folder (``--bundle DIR``); a bundle rewritten in place is a new version."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.description = f"bundle {self.path}"
        self._key: tuple[int, int, int] | None = None
        self._version: str | None = None
        self._name: str | None = None
        self.refresh()

    def model_name(self) -> str | None:
        return self._name

    def refresh(self) -> None:
        key = _stat_key(self.path / MANIFEST_FILE)
        if key == self._key and key is not None:
            return
        self._key = key
        try:
            manifest = read_manifest(self.path)
            self._version, self._name = manifest.version, manifest.name
            self.last_error = None
        except BundleError as exc:
            self._version = None
            self.last_error = str(exc)

    def versions(self) -> list[str]:
        return [self._version] if self._version is not None else []

    def fingerprint(self, version: str) -> str:
        return f"{version}:{self._key}:{_stat_key(self.path / MODEL_FILE)}"

    def fetch(self, version: str) -> Path:
        actual = read_manifest(self.path).version
        if actual != version:
            msg = f"{self.path} now holds version {actual}, not {version}"
            raise BundleError(msg)
        return self.path


class RegistrySource(ModelSource):
    """``REGISTRY/<name>/<version>/`` bundles and the optional ``REGISTRY/<name>/pinned``.

    A refresh costs one ``stat`` of the model's folder while nothing changed (publishing a
    version or writing/removing the pin file renames an entry in that folder).
    """

    def __init__(self, root: Path | str, name: str) -> None:
        self.registry = Registry(root)
        self.name = name
        self.folder = self.registry.root / name
        self.description = f"registry {self.registry.root} (model {name})"
        self._key: tuple[int, int, int] | None = None
        self._listed_at_ns = 0
        self._versions: list[str] = []
        self._pinned: str | None = None
        self.refresh()

    def refresh(self) -> None:
        key = _stat_key(self.folder)
        if key is not None and key == self._key and self._listed_at_ns - key[1] > _MTIME_SLACK_NS:
            return
        self._key = key
        self._listed_at_ns = time.time_ns()
        try:
            self._versions = self.registry.versions(self.name)
            self._pinned = self.registry.pinned(self.name)
            self.last_error = None if self._versions else f"{self.folder} holds no bundle yet"
        except (OSError, BundleError) as exc:
            self._versions, self._pinned = [], None
            self.last_error = f"cannot list {self.folder}: {exc}"

    def versions(self) -> list[str]:
        return list(self._versions)

    def model_name(self) -> str:
        return self.name

    def pinned(self) -> str | None:
        return self._pinned

    def fingerprint(self, version: str) -> str:
        folder = self.registry.bundle_path(self.name, version)
        return f"{version}:{_stat_key(folder / MANIFEST_FILE)}:{_stat_key(folder / MODEL_FILE)}"

    def rollout(self, version: str) -> Rollout | None:
        return self.registry.rollout(self.name, version)

    def fetch(self, version: str) -> Path:
        path = self.registry.bundle_path(self.name, version)
        if not (path / MANIFEST_FILE).is_file():
            msg = f"{self.name} version {version} is not in {self.registry.root} any more"
            raise BundleError(msg)
        return path


class ModelsTopicSource(ModelSource):
    """Follows the ``models`` topic: the latest announcement of each version of ``name``.

    A background thread, started when the model store attaches its trust policy (an
    announcement is checked as it arrives), owns a kafka-python consumer without a group
    (every partition assigned, read from the beginning), so a broker that is away never
    blocks the agent (kafka-python's metadata calls wait without a deadline). Announced
    bundles are written
    into ``cache_dir/<version>/`` when fetched; :meth:`retain` keeps only the ones in use
    (the current and the previous version). Bundles cached by an earlier run are offered
    too, so a device restarting without its broker still starts with its last model.
    """

    #: Announcements kept in memory (newest versions); older ones are forgotten.
    MAX_ANNOUNCEMENTS = 16

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        name: str,
        cache_dir: Path | str,
        *,
        poll_timeout_ms: int = 500,
        retry_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self.cache_dir = Path(cache_dir)
        self.description = f"topic {topic!r} on {settings.bootstrap_servers} (model {name})"
        self.poll_timeout_ms = poll_timeout_ms
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._announcements: dict[str, tuple[Announcement, int, int]] = {}
        self._cached: dict[str, str] = self._scan_cache()
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        #: Announcements that could not be parsed (logged; counted here).
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name=f"models-topic-{name}", daemon=True)

    def attach(self, trust: TrustPolicy) -> None:
        """Start reading the topic, now that announcements can be checked on arrival."""
        super().attach(trust)
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    # ------------------------------------------------------------ cache on disk

    def _scan_cache(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if not self.cache_dir.is_dir():
            return found
        for folder in self.cache_dir.iterdir():
            if folder.name.startswith(".") or not (folder / MANIFEST_FILE).is_file():
                continue
            try:
                manifest = read_manifest(folder)
            except BundleError as exc:
                logger.warning(
                    'ignoring unreadable cached bundle path="%s" error="%s"', folder, exc
                )
                continue
            if manifest.name == self.name and manifest.version == folder.name:
                found[folder.name] = manifest.model_sha256
        if found:
            logger.info(
                'cached bundles found model="%s" versions="%s"',
                self.name,
                ",".join(sorted(found, key=version_key)),
            )
        return found

    # ----------------------------------------------------------- ModelSource

    def versions(self) -> list[str]:
        with self._lock:
            names = set(self._announcements) | set(self._cached)
        return sorted(names, key=version_key)

    def model_name(self) -> str:
        return self.name

    def ready(self) -> bool:
        return self._caught_up.is_set()

    def fingerprint(self, version: str) -> str:
        with self._lock:
            entry = self._announcements.get(version)
            cached = self._cached.get(version)
        if cached is not None:  # fetch() prefers the cached copy while it verifies
            folder = self.cache_dir / version
            stats = f"{_stat_key(folder / MANIFEST_FILE)}:{_stat_key(folder / MODEL_FILE)}"
            return f"{version}:cached:{cached}:{stats}"
        if entry is not None:
            manifest = json.dumps(entry[0].manifest, sort_keys=True).encode()
            return f"{version}:announced:{hashlib.sha256(manifest).hexdigest()}"
        return f"{version}:gone"

    def rollout(self, version: str) -> Rollout | None:
        with self._lock:
            entry = self._announcements.get(version)
        return announced_rollout(entry[0]) if entry is not None else None

    def fetch(self, version: str) -> Path:
        """The cached copy of ``version`` while it verifies (a version is immutable: a later
        announcement of the same version cannot replace a verified copy), else the
        announcement, materialized and verified before it replaces anything."""
        with self._lock:
            entry = self._announcements.get(version)
            cached = self._cached.get(version)
        dest = self.cache_dir / version
        if cached is not None and (dest / MANIFEST_FILE).is_file():
            try:
                self.trust.verify_bundle(dest)
                return dest
            except BundleError as exc:
                if entry is None:
                    raise
                logger.warning(
                    'cached bundle no longer verifies, fetching the announcement model="%s" '
                    'version="%s" error="%s"',
                    self.name,
                    version,
                    exc,
                )
        if entry is None:
            msg = f"{self.name} version {version} was not announced on {self.topic!r}"
            raise BundleError(msg)
        ann = entry[0]
        path = materialize(
            ann, dest, max_bytes=self.trust.max_model_bytes, verify=self.trust.verify_bundle
        )
        with self._lock:
            self._cached[version] = str(ann.manifest.get("model_sha256", ""))
        return path

    def retain(self, versions: Collection[str]) -> None:
        keep = set(versions)
        with self._lock:
            drop = [v for v in self._cached if v not in keep]
            for version in drop:
                del self._cached[version]
        for version in drop:
            shutil.rmtree(self.cache_dir / version, ignore_errors=True)
            logger.debug('removed cached bundle model="%s" version="%s"', self.name, version)

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is None:  # never attached: nothing was started
            return
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():  # a daemon, blocked in a kafka-python call; it ends soon
            logger.debug('models topic reader still stopping topic="%s"', self.topic)

    # ------------------------------------------------------------- the reader

    def _run(self) -> None:
        consumer: Any = None
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._open()
                    if not consumer.assignment() and not self._assign(consumer):
                        self._stop.wait(self.retry_s)
                        continue
                    batches = consumer.poll(timeout_ms=self.poll_timeout_ms)
                    for records in batches.values():
                        for record in records:
                            self._handle(record)
                    if not self._caught_up.is_set() and _caught_up(consumer):
                        self._caught_up.set()
                        logger.info(
                            'models topic read topic="%s" model="%s" versions="%s"',
                            self.topic,
                            self.name,
                            ",".join(self.versions()),
                        )
                    failures = 0
                    self.last_error = None
                except Exception as exc:  # noqa: BLE001  keep following; the agent keeps serving
                    failures += 1
                    self.last_error = f"reading {self.topic!r}: {type(exc).__name__}: {exc}"
                    if failures == 1 or failures % 30 == 0:
                        logger.warning(
                            'models topic unavailable topic="%s" error="%s" failures=%d',
                            self.topic,
                            self.last_error,
                            failures,
                        )
                    if consumer is not None and isinstance(exc, EdgeInferError):
                        _close_quietly(consumer)
                        consumer = None
                    self._stop.wait(min(self.retry_s * failures, 30.0))
        finally:
            if consumer is not None:
                _close_quietly(consumer)

    def _open(self) -> Any:
        from stream.kafka import make_consumer

        return make_consumer(
            self.settings,
            group_id=None,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.client_id}-models",
            # give up on an absent broker within seconds, so close() is not held up
            bootstrap_timeout_ms=5000,
        )

    def _assign(self, consumer: Any) -> bool:
        from kafka import TopicPartition

        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            self.last_error = f"topic {self.topic!r} does not exist yet"
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return True

    def _handle(self, record: Any) -> None:
        key = record.key.decode(errors="replace") if record.key is not None else None
        if key is not None and key != self.name:
            return
        try:
            ann = parse_announcement(record.value or b"")
        except BundleError as exc:
            self.rejected += 1
            logger.warning(
                'bad model announcement topic="%s" partition=%d offset=%d error="%s"',
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        if ann.name != self.name:
            return
        try:  # refused here, an unsigned announcement cannot evict a real one from the table
            self.trust.verify_manifest(ann.manifest, what=f"model announcement {ann.version}")
        except BundleError as exc:
            self.rejected += 1
            logger.warning(
                'untrusted model announcement topic="%s" partition=%d offset=%d version="%s" '
                'error="%s"',
                record.topic,
                record.partition,
                record.offset,
                ann.version,
                exc,
            )
            return
        with self._lock:
            self._announcements[ann.version] = (ann, record.partition, record.offset)
            if len(self._announcements) > self.MAX_ANNOUNCEMENTS:
                oldest = sorted(self._announcements, key=version_key)[0]
                del self._announcements[oldest]
        logger.info(
            'model announced topic="%s" model="%s" version="%s" form="%s" offset=%d',
            record.topic,
            ann.name,
            ann.version,
            "inline" if ann.model_b64 is not None else "uri",
            record.offset,
        )


def _caught_up(consumer: Any) -> bool:
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            return False
        if consumer.position(tp) < high:
            return False
    return True


def _close_quietly(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception:  # noqa: BLE001, S110  closing a consumer of a broker that went away
        pass

"""The model store: which model the agent serves, and safe switches between versions.

A candidate version goes through, in order: fetch from the source, sha256 and Ed25519
signature (:class:`stream.bundle.TrustPolicy`: unsigned bundles are refused unless the
agent runs with ``--allow-unsigned``; the model file is read once, bounded), name/task/shape
checks, a test load in a child process (:mod:`edge_agent.probe`: a corrupt model that
crashes LiteRT kills the child, not the agent; skipped when the same bytes passed it before
on this installation, see :class:`~edge_agent.probe.ProbeCache`), then the load in this
process from the very bytes that were verified. Anything that fails is refused: logged,
counted (``edge_agent_model_swaps_total{result="refused"}``), remembered so it is not
retried on every poll, and the current model keeps serving.

Which version: a pin wins (``--pin``, then an in-process :meth:`ModelStore.rollback`, then
the registry's ``pinned`` file written by ``edgeinfer rollback``/``pin``), else the newest
version that was not refused. Anti-rollback (:mod:`edge_agent.version_floor`): nothing
below the highest version this installation verified and served (or ``--min-version``) is
picked on the store's own account; the registry's unsigned pin file may go below it only
with ``--trust-registry-pin``; ``--pin`` and :meth:`ModelStore.rollback` may, and are
logged and counted (``edge_agent_model_downgrades_total{by}``). :meth:`ModelStore.poll` is
cheap and never blocks on a candidate: the checks run on a worker thread and the ready
model is handed over at a later poll, for the caller to switch to between batches. See
docs/models.md.

Why one module of this size: the store is one state machine (current, candidate, refused,
pinned, floor) whose rules above must be read together to trust it; the concerns with
their own homes are already out (sources.py, probe/, version_floor.py, runtime.py,
stream/bundle.py's TrustPolicy). What remains is the ordering of those steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.exceptions import (
    AgentConfigError,
    AgentError,
    ModelLoadError,
    ModelRefusedError,
    NoModelError,
)
from edge_agent.probe import CACHE_DIR, DEFAULT_TIMEOUT_S, ProbeCache, Prober
from edge_agent.promotion import Decision, DecisionLog
from edge_agent.runtime import Runtime, check_against_manifest, load_runtime
from edge_agent.sources import BundleDirSource, ModelSource
from edge_agent.version_floor import VersionFloor
from stream.bundle import DEFAULT_MAX_MODEL_BYTES, MODEL_FILE, Manifest, TrustPolicy
from stream.exceptions import BundleError
from stream.preprocessing import ImagePreprocessing, Preprocessing
from stream.registry import version_key
from stream.rollout import in_rollout

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)

#: How long load_initial waits for a source to finish reading (the models topic) before it
#: takes the best version seen so far.
READY_GRACE_S = 10.0
_WAIT_STEP_S = 0.25


@dataclass(frozen=True)
class LoadedModel:
    """A verified bundle loaded into a runtime, ready to serve."""

    manifest: Manifest
    runtime: Runtime
    path: Path
    preprocessing: Preprocessing

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


class ModelStore:
    """Loads, verifies, swaps and rolls back the agent's model (see the module docstring)."""

    def __init__(
        self,
        *,
        source: ModelSource,
        model_name: str | None,
        public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
        num_threads: int,
        pinned_version: str | None,
        metrics: Any | None,
        state_dir: Path,
        allow_unsigned: bool = False,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
        min_version: str | None = None,
        trust_registry_pin: bool = False,
        probe_timeout_s: float = DEFAULT_TIMEOUT_S,
        keep: int = 2,
        prober: Prober | None = None,
        promotion: str = "direct",
        agent_id: str = "",
    ) -> None:
        """``public_key`` is the trusted key (or keys, during a rotation); without one the
        store refuses to start unless ``allow_unsigned``. ``prober`` runs the child test
        loads (default: one caching passes in ``state_dir/probe-cache``); the agent passes
        the one it started a test load with. ``promotion`` is ``direct`` (a newer version
        is switched to once it passes its checks) or ``shadow`` (it becomes the
        :meth:`candidate`, run in shadow until :meth:`promote` or :meth:`reject`);
        ``agent_id`` places this agent in a version's rollout share (:mod:`stream.rollout`)."""
        keys = () if public_key is None else tuple(_as_sequence(public_key))
        if not keys and not allow_unsigned:
            msg = (
                "no public key: the agent runs only bundles signed by a trusted key. Pass "
                "--public-key PATH (EDGE_PUBLIC_KEY: the .pub file of `edgeinfer keys "
                "generate`, or a folder of .pub files), or --allow-unsigned "
                "(EDGE_ALLOW_UNSIGNED=1) to run unsigned bundles (development only)"
            )
            raise AgentConfigError(msg)
        self.trust = TrustPolicy(
            keys=keys, allow_unsigned=allow_unsigned, max_model_bytes=max_model_bytes
        )
        self.source = source
        source.attach(self.trust)
        self.model_name = model_name
        self.num_threads = num_threads
        self.metrics = metrics
        self.state_dir = Path(state_dir)
        self.floor = VersionFloor(self.state_dir, min_version=min_version)
        self.trust_registry_pin = trust_registry_pin
        self.probe_timeout_s = probe_timeout_s
        self.keep = max(keep, 1)
        self.prober = (
            prober
            if prober is not None
            else Prober(cache=ProbeCache(self.state_dir / CACHE_DIR), timeout_s=probe_timeout_s)
        )
        self.promotion = promotion
        self.agent_id = agent_id
        self.decisions = DecisionLog(self.state_dir)
        self._candidate: LoadedModel | None = None
        self._outside_rollout: set[str] = set()
        self._pin = pinned_version
        self._rollback_pin: str | None = None
        self._lock = threading.RLock()
        self._current: LoadedModel | None = None
        self._previous: LoadedModel | None = None
        #: The model the serving loop was last given (by load_initial or poll).
        self._handed: LoadedModel | None = None
        self._fingerprints: dict[str, str] = {}  # version -> fingerprint, of loaded models
        self._refused: dict[str, tuple[str, str]] = {}  # fingerprint -> (version, reason)
        self._pending: Future[LoadedModel | None] | None = None
        self._pending_version: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-store")
        self._warned_pin: str | None = None
        #: What chose the last target: None (the newest), "pin", "rollback", "registry_pin".
        self._target_by: str | None = None
        self._blocked_pin: str | None = None
        self._blocked_version: str | None = None
        self.refused_count = 0
        if metrics is not None:
            metrics.model_unsigned_allowed.set(1 if allow_unsigned else 0)
        if allow_unsigned:
            logger.warning(
                "unsigned bundles are allowed (--allow-unsigned): anyone who can write to "
                "the model source can run a model on this agent; development only"
            )

    # ------------------------------------------------------------- public API

    def load_initial(self, timeout_s: float, *, stop: threading.Event | None = None) -> LoadedModel:
        """Block until a model is loaded; :class:`NoModelError` at the deadline (or as soon
        as ``stop`` is set).

        A ``--bundle`` source is not waited on: a refused bundle raises
        :class:`ModelRefusedError` at once.
        """
        start = time.monotonic()
        deadline = start + timeout_s
        ready_by = start + min(READY_GRACE_S, timeout_s / 2)
        while True:
            self.source.refresh()
            if self.source.ready() or time.monotonic() >= ready_by:
                with self._lock:
                    target = self._target()
                    while target is not None:
                        by = self._target_by
                        model = self._prepare(target, self.source.fingerprint(target))
                        if model is not None:
                            self._handed = self._switch(model, result=None, by=by)
                            return model
                        target = self._target()
                if isinstance(self.source, BundleDirSource) and (
                    self._refused or self._blocked_version
                ):
                    reasons = "; ".join(r for _, r in self._refused.values())
                    msg = (
                        f"the model in {self.source.description} was refused: "
                        f"{reasons or self._floor_message()}"
                    )
                    raise ModelRefusedError(msg)
            now = time.monotonic()
            if now >= deadline:
                raise NoModelError(self._no_model_message(timeout_s))
            if stop is not None and stop.wait(min(_WAIT_STEP_S, deadline - now)):
                msg = "stopped while waiting for a model: " + self._no_model_message(now - start)
                raise NoModelError(msg)
            if stop is None:
                time.sleep(min(_WAIT_STEP_S, deadline - now))

    def current(self) -> LoadedModel:
        """The model being served."""
        with self._lock:
            if self._current is None:
                msg = "no model is loaded yet: call load_initial() first"
                raise NoModelError(msg)
            return self._current

    @property
    def previous(self) -> LoadedModel | None:
        """The model served before the current one (kept loaded for :meth:`rollback`)."""
        return self._previous

    @property
    def refused(self) -> dict[str, str]:
        """``{version: reason}`` of every refused candidate."""
        with self._lock:
            return {version: reason for version, reason in self._refused.values()}

    def candidate(self) -> LoadedModel | None:
        """The version loaded and checked under shadow promotion, waiting for the gates
        (see docs/models.md "Shadow and promote"): the pipeline runs it in shadow and calls
        :meth:`promote` or :meth:`reject`. Its runtime belongs to that caller."""
        with self._lock:
            return self._candidate

    def promote(self, model: LoadedModel, decision: Decision) -> LoadedModel | None:
        """Serve the candidate ``model`` (it passed the gates): the anti-rollback floor rises
        to it, the decision is recorded. None if it is no longer the candidate (the caller
        then closes it)."""
        with self._lock:
            if self._candidate is not model:
                return None
            self._candidate = None
            self._decided(model, decision)
            switched = self._switch(model, result="ok", by=None)
            self._handed = switched
            return switched

    def reject(self, model: LoadedModel, decision: Decision) -> None:
        """The candidate ``model`` failed the gates: recorded, never the floor, and not
        shadowed again (after a restart either); ``--pin`` still runs it."""
        with self._lock:
            if self._candidate is model:
                self._candidate = None
            self._decided(model, decision)

    def _decided(self, model: LoadedModel, decision: Decision) -> None:
        self.decisions.record(model.name, model.version, decision)
        log = logger.info if decision.result == "promoted" else logger.warning
        log(
            'model candidate %s name="%s" version="%s" reason="%s" serving="%s" %s',
            decision.result,
            model.name,
            model.version,
            decision.reason,
            self._current_version(),
            decision.detail,
        )
        if self.metrics is not None:
            self.metrics.promotions.labels(
                model=model.name, result=decision.result, reason=decision.reason
            ).inc()

    def _shadows(self, model: LoadedModel) -> bool:
        """Whether ``model`` (checked, the target) is shadowed rather than switched to: a
        newer version than the one serving, chosen as the newest (pins switch directly),
        under ``--promotion shadow`` or a rollout in ``shadow`` mode."""
        current = self._current
        if current is None or self._target_by is not None:
            return False
        if version_key(model.version) <= version_key(current.version):
            return False
        return self._shadow_mode(model.version)

    def _shadow_mode(self, version: str) -> bool:
        """A newer ``version`` is shadowed: ``--promotion shadow``, or its rollout says so."""
        if self.promotion == "shadow":
            return True
        rollout = self.source.rollout(version)
        return rollout is not None and rollout.mode == "shadow"

    def poll(self, *, block: bool = False) -> LoadedModel | None:
        """A newly loaded model to switch to, or None (cheap; call it between batches).

        Checks of a new candidate run on a worker thread; the model is returned by the poll
        after they finish (``block=True`` waits for them). The returned model is already the
        store's current one: the caller must switch to it before its next batch.
        """
        model = self._poll_once()
        pending = self._pending
        if model is None and block and pending is not None:
            pending.exception()  # waits for the checks, outside the lock
            model = self._poll_once()
        return model

    def _poll_once(self) -> LoadedModel | None:
        with self._lock:
            model = self._poll_locked()
            if model is None and self._current is not None and self._current is not self._handed:
                model = self._current  # switched outside poll(), e.g. by rollback()
            if model is not None:
                self._handed = model
            return model

    def _poll_locked(self) -> LoadedModel | None:
        self.source.refresh()
        target = self._target()
        pending = self._pending
        if pending is not None:
            if not pending.done():
                return None
            self._pending, version = None, self._pending_version
            model = pending.result()
            if model is not None and target == version and self._current_version() != version:
                if self._shadows(model):
                    self._candidate = model
                    logger.info(
                        'model candidate in shadow name="%s" version="%s" serving="%s"',
                        model.name,
                        model.version,
                        self._current_version(),
                    )
                    return None
                return self._switch(model, result=self._swap_result(model), by=self._target_by)
            if model is not None:
                model.runtime.close()
        candidate = self._candidate
        if candidate is not None:
            if target == candidate.version:
                return None
            # a pin, a newer version or the candidate's withdrawal: the shadow stops (the
            # pipeline's Shadow owns the candidate's runtime and closes it)
            logger.info(
                'model candidate dropped name="%s" version="%s" now_target="%s"',
                candidate.name,
                candidate.version,
                target,
            )
            self._candidate = None
        if target is None or target == self._current_version():
            return None
        fingerprint = self.source.fingerprint(target)
        previous = self._previous
        if (
            previous is not None
            and previous.version == target
            and self._fingerprints.get(target) == fingerprint
        ):
            return self._switch(previous, result=self._swap_result(previous), by=self._target_by)
        self._pending_version = target
        self._pending = self._executor.submit(self._prepare, target, fingerprint)
        return None

    def rollback(self) -> LoadedModel:
        """Serve the previous version again (kept loaded), and stay on it: it becomes pinned
        in this process until :meth:`unpin` (the registry's pin file is not touched).

        The agent's own decision (the pipeline calls it when the served model fails its
        health gate), so anti-rollback does not stand in the way: the floor drops to the
        previous version, and the version left is not picked again by itself after a
        restart (see :mod:`edge_agent.version_floor`). The serving loop gets the
        rolled-back model from its next :meth:`poll`.
        """
        with self._lock:
            if self._previous is None or self._current is None:
                msg = "no previous model version to roll back to: only one was ever loaded"
                raise NoModelError(msg)
            target, left = self._previous, self._current
            self._rollback_pin = target.version
            logger.warning(
                'rolling back model="%s" from_version="%s" to_version="%s"',
                target.name,
                left.version,
                target.version,
            )
            model = self._switch(target, result="rollback", by="rollback")
            self.floor.rolled_back(
                target.name, from_version=left.version, to_version=target.version
            )
            return model

    def pin(self, version: str) -> None:
        """Pin this process to ``version`` (as ``--pin``); the next poll switches to it."""
        with self._lock:
            self._pin = version

    def unpin(self) -> None:
        """Forget ``--pin`` and any rollback pin: follow the source's pin or newest again
        (versions rolled back from included)."""
        with self._lock:
            self._pin = None
            self._rollback_pin = None
            self.floor.forget_rollbacks(self._name())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.prober.close()
        self.source.close()
        with self._lock:
            for model in (self._current, self._previous):
                if model is not None:
                    model.runtime.close()

    # ------------------------------------------------------------- internals

    def _current_version(self) -> str | None:
        return self._current.version if self._current is not None else None

    def _name(self) -> str | None:
        current = self._current
        return self.model_name or (current.name if current else None) or self.source.model_name()

    def _pin_choice(self) -> tuple[str | None, str | None]:
        """``(version, by)``: the pin that applies, and who set it."""
        if self._pin:
            return self._pin, "pin"
        if self._rollback_pin:
            return self._rollback_pin, "rollback"
        pinned = self.source.pinned()
        if pinned is None or self._registry_pin_allowed(pinned):
            return pinned, "registry_pin" if pinned else None
        return None, None

    def _registry_pin_allowed(self, pinned: str) -> bool:
        """The registry's pin file is unsigned: it may hold or advance the agent, but move it
        below the floor only with ``--trust-registry-pin`` (and never below --min-version)."""
        if not self.floor.is_below(self._name(), pinned):
            return True
        if self.trust_registry_pin and not self.floor.below_min(pinned):
            return True
        if self._blocked_pin != pinned:
            self._blocked_pin = pinned
            logger.warning(
                'ignoring the registry pin model="%s" version="%s" highest_verified="%s": it '
                "is below the version this agent verified; an operator allows that with "
                "--trust-registry-pin (EDGE_TRUST_REGISTRY_PIN=1) or --pin VERSION",
                self._name() or "?",
                pinned,
                self.floor.floor(self._name()),
            )
            if self.metrics is not None:
                self.metrics.model_downgrades_blocked.labels(reason="registry_pin").inc()
        return False

    def _target(self) -> str | None:
        """The version to serve: a pin, else the newest version not refused and not below
        the anti-rollback floor."""
        versions = self.source.versions()
        pin, self._target_by = self._pin_choice()
        if pin is not None:
            if pin not in versions:
                if self._warned_pin != pin:
                    self._warned_pin = pin
                    logger.warning(
                        'pinned version not available model="%s" version="%s" available="%s"',
                        self.model_name or "?",
                        pin,
                        ",".join(versions),
                    )
                return None
            return None if self._is_refused(pin) else pin
        name = self._name()
        left = self.floor.rolled_back_from(name)
        rejected = self.decisions.rejected(name)
        usable = [
            v for v in versions if not self._is_refused(v) and v not in left and v not in rejected
        ]
        candidates = self._in_rollout(name, [v for v in usable if not self.floor.is_below(name, v)])
        if candidates and self._current is None:
            # a restart under shadow promotion starts on the version it verified and served,
            # so that a newer one (a candidate that was not judged yet) is shadowed again
            floor = self.floor.floor(name)
            served = [v for v in candidates if floor is not None and not _newer(v, floor)]
            if served and served[-1] != candidates[-1] and self._shadow_mode(candidates[-1]):
                return served[-1]
        if candidates:
            return candidates[-1]
        if usable and usable[-1] != self._current_version():
            self._note_blocked(usable[-1])
        return None

    def _in_rollout(self, name: str | None, versions: list[str]) -> list[str]:
        """``versions`` without those newer than what this agent serves or verified whose
        rollout share leaves it out (unsigned metadata: it only holds back newer versions;
        an agent with no model at all takes the newest usable one rather than none)."""
        if name is None or not versions:
            return versions
        base = max(
            (v for v in (self._current_version(), self.floor.floor(name)) if v is not None),
            key=version_key,
            default=None,
        )
        kept = []
        for v in versions:
            if base is not None and version_key(v) <= version_key(base):
                kept.append(v)
            elif in_rollout(self.agent_id, name, v, self.source.rollout(v)):
                kept.append(v)
            elif v not in self._outside_rollout:
                self._outside_rollout.add(v)
                logger.info(
                    'model version outside this agent\'s rollout share, not adopted model="%s" '
                    'version="%s" agent_id="%s" serving="%s"',
                    name,
                    v,
                    self.agent_id,
                    self._current_version(),
                )
        if not kept and self._current is None:
            return versions
        return kept

    def _note_blocked(self, version: str) -> None:
        if self._blocked_version == version:
            return
        self._blocked_version = version
        logger.warning(
            'model downgrade refused model="%s" version="%s" %s',
            self._name() or "?",
            version,
            self._floor_message(),
        )
        if self.metrics is not None:
            self.metrics.model_downgrades_blocked.labels(reason="older_version").inc()

    def _floor_message(self) -> str:
        name = self._name()
        where = self.floor.path(name) if name else self.floor.folder
        return (
            f"versions below {self.floor.floor(name)} are not run: it is the highest version "
            f"this agent verified (anti-rollback, {where}) or --min-version; an operator runs "
            "an older one with --pin VERSION"
        )

    def _is_refused(self, version: str) -> bool:
        if self._current is not None and version == self._current.version:
            return False
        if all(v != version for v, _ in self._refused.values()):
            return False  # the common case, without computing a fingerprint
        return self.source.fingerprint(version) in self._refused

    def _swap_result(self, model: LoadedModel) -> str:
        current = self._current
        if current is not None and version_key(model.version) < version_key(current.version):
            return "rollback"
        return "ok"

    def _switch(self, model: LoadedModel, *, result: str | None, by: str | None) -> LoadedModel:
        """Serve ``model``; ``by`` says which pin chose it (None: the newest version)."""
        if self.floor.is_below(model.name, model.version):
            logger.warning(
                'model downgrade by="%s" model="%s" version="%s" highest_verified="%s"',
                by or "?",
                model.name,
                model.version,
                self.floor.floor(model.name),
            )
            if self.metrics is not None:
                self.metrics.model_downgrades.labels(by=by or "pin").inc()
        elif by != "rollback":
            self.floor.served(model.name, model.version)
        old = self._current
        if old is not None and old is not model:
            evicted = self._previous
            if evicted is not None and evicted is not model and evicted is not self._handed:
                evicted.runtime.close()
            self._previous = old
        self._current = model
        if self.metrics is not None:
            if result is not None:
                self.metrics.model_swaps.labels(result=result).inc()
            self.metrics.set_model(model.manifest)
        kept = [m.version for m in (self._current, self._previous) if m is not None]
        try:
            self.source.retain(kept[: self.keep])
        except OSError as exc:
            logger.warning('cannot prune cached bundles error="%s"', exc)
        logger.info(
            'model serving name="%s" version="%s" sha256=%s variant="%s" runtime="%s" '
            "default_delegates=%s batchable=%s previous=%s",
            model.name,
            model.version,
            model.manifest.model_sha256[:12],
            model.manifest.variant,
            model.runtime.name,
            model.runtime.uses_default_delegates,
            model.runtime.batchable,
            old.version if old is not None else None,
        )
        return model

    def _refuse(self, version: str, fingerprint: str, reason: str) -> None:
        with self._lock:
            self._refused[fingerprint] = (version, reason)
            self.refused_count += 1
        if self.metrics is not None:
            self.metrics.model_swaps.labels(result="refused").inc()
        logger.error(
            'model refused source="%s" version="%s" reason="%s" serving="%s"',
            self.source.description,
            version,
            reason,
            self._current_version(),
        )

    def _prepare(self, version: str, fingerprint: str) -> LoadedModel | None:
        """Fetch, verify, test-load in a child, load: the model, or None when refused."""
        try:
            return self._load_checked(version)
        except (AgentError, BundleError, OSError) as exc:
            self._refuse(version, fingerprint, str(exc))
        except Exception as exc:  # noqa: BLE001  anything unexpected refuses, never crashes
            logger.exception("unexpected error while preparing model version %s", version)
            self._refuse(version, fingerprint, f"{type(exc).__name__}: {exc}")
        return None

    def _load_checked(self, version: str) -> LoadedModel:
        path = self.source.fetch(version)
        bundle = self.trust.verify_bundle(path)
        manifest = bundle.manifest
        if manifest.version != version:
            msg = f"{path} is listed as version {version} but its manifest says {manifest.version}"
            raise ModelRefusedError(msg)
        expected_name = self.model_name or (self._current.name if self._current else None)
        if expected_name is not None and manifest.name != expected_name:
            msg = f"{path} holds model {manifest.name!r}, this agent serves {expected_name!r}"
            raise ModelRefusedError(msg)
        current = self._current
        if current is not None and manifest.task != current.manifest.task:
            msg = (
                f"{manifest.name} {version} is a {manifest.task} model; this agent serves "
                f"{current.manifest.task}: restart the agent to change the task"
            )
            raise ModelRefusedError(msg)
        model = bundle.model_bytes()  # the very bytes that were verified, not a second read
        what = f"{manifest.name} {version} ({path / MODEL_FILE})"
        probe = self.prober.probe(
            model,
            what=what,
            num_threads=self.num_threads,
            use_default_delegates=manifest.use_default_delegates,
            timeout_s=self.probe_timeout_s,
        )
        if not probe.ok:
            raise ModelRefusedError(probe.error)
        runtime = load_runtime(
            model_content=model,
            num_threads=self.num_threads,
            use_default_delegates=manifest.use_default_delegates,
        )
        try:
            for warning in check_against_manifest(runtime, manifest):
                logger.warning('model="%s" version="%s" %s', manifest.name, version, warning)
            _check_preprocessing(manifest, runtime)
        except AgentError:
            runtime.close()
            raise
        if manifest.use_default_delegates and not runtime.uses_default_delegates:
            if self.metrics is not None:
                self.metrics.runtime_fallback.labels(reason="xnnpack_invoke_failed").inc()
        with self._lock:
            self._fingerprints[version] = self.source.fingerprint(version)
        return LoadedModel(
            manifest=manifest, runtime=runtime, path=path, preprocessing=manifest.preprocessing
        )

    def _no_model_message(self, timeout_s: float) -> str:
        versions = self.source.versions()
        parts = [
            f"no usable model from {self.source.description} within {timeout_s:.0f} s",
            f"versions seen: {', '.join(versions) or 'none'}",
        ]
        pin = self._pin or self.source.pinned()
        if pin:
            parts.append(f"pinned to {pin}")
        if self._blocked_version or self._blocked_pin:
            parts.append(self._floor_message())
        if self._refused:
            parts.append("refused: " + "; ".join(f"{v}: {r}" for v, r in self._refused.values()))
        if self.source.last_error:
            parts.append(f"source: {self.source.last_error}")
        parts.append("publish a bundle with `edgeinfer publish` or raise --model-wait-s")
        return "; ".join(parts)


def _newer(version: str, than: str) -> bool:
    return version_key(version) > version_key(than)


def _as_sequence(
    key: Ed25519PublicKey | Sequence[Ed25519PublicKey],
) -> Sequence[Ed25519PublicKey]:
    return key if isinstance(key, Sequence) else [key]


def _check_preprocessing(manifest: Manifest, runtime: Runtime) -> None:
    """The preprocessing must produce exactly the model's input shape."""
    prep = manifest.preprocessing
    if isinstance(prep, ImagePreprocessing):
        produced = [prep.height, prep.width, prep.channels]
    else:
        produced = [prep.window, prep.channels]
    wanted = list(runtime.input_spec.shape[1:])
    if produced != wanted:
        msg = (
            f"{manifest.name} {manifest.version}: preprocessing produces inputs shaped "
            f"{produced} but the model takes {wanted}; re-export the bundle"
        )
        raise ModelLoadError(msg)

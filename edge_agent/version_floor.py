"""Anti-rollback: the lowest version the agent moves to on its own.

The floor of a model is the highest of ``--min-version`` and the highest version this
installation verified and served, kept in ``STATE_DIR/anti-rollback/<model>.json`` so it
survives restarts. The model store never picks a version below it by itself: not when the
newest announcement of a version is garbage, not when newer versions vanish from a
registry, not when an unsigned ``pinned`` file names an old version. Only an operator moves
below it (``--pin``, or the registry's pin with ``--trust-registry-pin``), and the agent
itself when it rolls back from a served model that fails its health gate
(:meth:`VersionFloor.rolled_back`: the floor drops to the version rolled back to, and the
version rolled back from is not picked again on its own after a restart).

The state file is local and written atomically; one that cannot be parsed is ignored with
an error in the log (as if the agent were new), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from stream.bundle import read_bounded
from stream.exceptions import BundleError
from stream.registry import is_valid_component, version_key

logger = logging.getLogger(__name__)

STATE_SUBDIR = "anti-rollback"
#: Versions rolled back from that are remembered (the most recent ones).
MAX_ROLLED_BACK = 16
_MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class FloorState:
    """What a state file holds for one model."""

    highest: str | None = None
    rolled_back: tuple[str, ...] = ()


def parse_floor_state(raw: bytes) -> FloorState:
    """A state file's content; :class:`ValueError` for anything but the expected shape."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        msg = "the anti-rollback state must be a JSON object"
        raise ValueError(msg)
    highest = data.get("highest_verified")
    rolled_back = data.get("rolled_back_from", [])
    if highest is not None and not (isinstance(highest, str) and is_valid_component(highest)):
        msg = f"highest_verified {highest!r} is not a version"
        raise ValueError(msg)
    if not isinstance(rolled_back, list) or not all(
        isinstance(v, str) and is_valid_component(v) for v in rolled_back
    ):
        msg = "rolled_back_from must be a list of versions"
        raise ValueError(msg)
    return FloorState(highest=highest, rolled_back=tuple(rolled_back[-MAX_ROLLED_BACK:]))


def _higher(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a if b is None else b
    return a if version_key(a) >= version_key(b) else b


class VersionFloor:
    """The anti-rollback floor of each model (see the module docstring)."""

    def __init__(self, state_dir: Path | str, *, min_version: str | None = None) -> None:
        self.folder = Path(state_dir) / STATE_SUBDIR
        self.min_version = min_version
        self._lock = threading.Lock()
        self._states: dict[str, FloorState] = {}

    def state(self, model: str | None) -> FloorState:
        if model is None:
            return FloorState()
        with self._lock:
            if model not in self._states:
                self._states[model] = self._read(model)
            return self._states[model]

    def floor(self, model: str | None) -> str | None:
        """The lowest version the agent may pick on its own (None: no floor)."""
        return _higher(self.min_version, self.state(model).highest)

    def is_below(self, model: str | None, version: str) -> bool:
        floor = self.floor(model)
        return floor is not None and version_key(version) < version_key(floor)

    def below_min(self, version: str) -> bool:
        """Below ``--min-version``: never run, whoever asks (a ``--pin`` there is refused
        by the configuration)."""
        return self.min_version is not None and version_key(version) < version_key(self.min_version)

    def rolled_back_from(self, model: str | None) -> tuple[str, ...]:
        return self.state(model).rolled_back

    def served(self, model: str, version: str) -> None:
        """``version`` was verified and is served: the floor rises to it (never falls; the
        file is read again first, for agents that share a state dir)."""
        state = self.state(model)
        if state.highest is not None and _higher(state.highest, version) == state.highest:
            return
        highest = _higher(self._read(model).highest, version)
        self._write(model, FloorState(highest=highest, rolled_back=state.rolled_back))

    def rolled_back(self, model: str, *, from_version: str, to_version: str) -> None:
        """The agent left ``from_version`` for ``to_version`` on its own decision: the floor
        drops to ``to_version`` and ``from_version`` is not picked by itself again."""
        state = self.state(model)
        highest = state.highest
        if highest is None or version_key(to_version) < version_key(highest):
            highest = to_version
        rolled = tuple(v for v in state.rolled_back if v != from_version) + (from_version,)
        self._write(model, FloorState(highest=highest, rolled_back=rolled[-MAX_ROLLED_BACK:]))

    def forget_rollbacks(self, model: str | None) -> None:
        """Versions rolled back from may be picked again (``ModelStore.unpin``)."""
        state = self.state(model)
        if model is not None and state.rolled_back:
            self._write(model, FloorState(highest=state.highest))

    # ------------------------------------------------------------------ files

    def path(self, model: str) -> Path:
        if is_valid_component(model):
            return self.folder / f"{model}.json"
        return self.folder / f"{hashlib.sha256(model.encode()).hexdigest()[:32]}.json"

    def _read(self, model: str) -> FloorState:
        path = self.path(model)
        try:
            return parse_floor_state(read_bounded(path, max_bytes=_MAX_STATE_BYTES, what="state"))
        except FileNotFoundError:
            return FloorState()
        except (BundleError, ValueError, RecursionError) as exc:
            logger.error(
                'ignoring the anti-rollback state path="%s" error="%s": the floor starts '
                "from --min-version; delete the file to silence this",
                path,
                exc,
            )
            return FloorState()

    def _write(self, model: str, state: FloorState) -> None:
        with self._lock:
            self._states[model] = state
        data = {
            "model": model,
            "highest_verified": state.highest,
            "rolled_back_from": list(state.rolled_back),
        }
        path = self.path(model)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(data, fh)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:  # the floor still holds in memory
            logger.error(
                'cannot save the anti-rollback state path="%s" error="%s": it holds until '
                "the agent restarts; make --state-dir writable",
                path,
                exc,
            )
        logger.info(
            'anti-rollback floor model="%s" highest_verified="%s" rolled_back_from="%s"',
            model,
            state.highest,
            ",".join(state.rolled_back),
        )

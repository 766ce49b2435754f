"""Rollout of a model version to a share of the fleet: ``rollout.json`` and the announcement's
``rollout`` field.

``{"share": 0.5, "mode": "shadow"}``: an agent adopts the version only when
:func:`in_rollout` places it in the share, a stable hash of (agent id, model, version), so
the same agents are in for a version whatever their order or restarts (with a stable
``--agent-id``); raising the share only adds agents. ``mode`` is ``serve`` (the agent's
own ``--promotion`` policy) or ``shadow`` (agents in the share shadow the version and
promote it only by the gates, even under ``--promotion direct``).

This metadata is **not signed**: it can only delay or gate adopting a newer verified
version, never make an agent run anything it would not run otherwise, nor move it down
(docs/models.md, "Rollout to a share of the fleet"). Malformed metadata is read as
share 0 (not adopted, logged), the safe side of that rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stream.bounded import read_bounded
from stream.exceptions import BundleError

ROLLOUT_FILE = "rollout.json"
RolloutMode = Literal["serve", "shadow"]
ROLLOUT_MODES: tuple[RolloutMode, ...] = ("serve", "shadow")
_MAX_ROLLOUT_BYTES = 4096


@dataclass(frozen=True)
class Rollout:
    """Who adopts a version: a share of the agents (0..1), and how (serve or shadow)."""

    share: float = 1.0
    mode: RolloutMode = "serve"

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "mode": self.mode}


#: What an unreadable or malformed rollout means: nobody adopts the version yet.
NOBODY = Rollout(share=0.0)


def parse_rollout(data: Any) -> Rollout:
    """A rollout from its JSON object; :class:`BundleError` for anything else."""
    if not isinstance(data, dict):
        msg = 'a rollout must be a JSON object like {"share": 0.5, "mode": "shadow"}'
        raise BundleError(msg)
    share = data.get("share", 1.0)
    if (
        isinstance(share, bool)
        or not isinstance(share, int | float)
        or not math.isfinite(share)
        or not 0.0 <= share <= 1.0
    ):
        msg = f"rollout share must be a number in [0, 1], got {share!r}"
        raise BundleError(msg)
    mode = data.get("mode", "serve")
    if mode not in ROLLOUT_MODES:
        msg = f"rollout mode must be one of {', '.join(ROLLOUT_MODES)}, got {mode!r}"
        raise BundleError(msg)
    return Rollout(share=float(share), mode=mode)


def rollout_point(agent_id: str, model: str, version: str) -> float:
    """This agent's stable place in [0, 1) for a version of a model."""
    digest = hashlib.sha256(f"{agent_id}\x00{model}\x00{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_rollout(agent_id: str, model: str, version: str, rollout: Rollout | None) -> bool:
    """Whether the agent ``agent_id`` adopts ``version`` of ``model`` (no rollout: all do)."""
    if rollout is None or rollout.share >= 1.0:
        return True
    return rollout_point(agent_id, model, version) < rollout.share


def read_rollout(folder: Path) -> Rollout | None:
    """``folder/rollout.json`` (None when absent); :class:`BundleError` when unreadable."""
    path = Path(folder) / ROLLOUT_FILE
    try:
        raw = read_bounded(path, max_bytes=_MAX_ROLLOUT_BYTES, what="rollout file")
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise BundleError(msg) from exc
    try:
        return parse_rollout(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        msg = f"{path} is not JSON: {exc}"
        raise BundleError(msg) from exc


def write_rollout(folder: Path, rollout: Rollout) -> Path:
    """Write ``folder/rollout.json`` atomically."""
    path = Path(folder) / ROLLOUT_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{ROLLOUT_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(rollout.to_dict(), fh)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path

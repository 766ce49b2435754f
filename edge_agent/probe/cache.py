"""The test-load cache: models that passed, keyed by bytes, options and installation.

:func:`installation` is the fingerprint of what a test load depends on besides the model
and its options; :class:`ProbeCache` keeps one small JSON file per pass in the agent's
state dir, so restarting the same model on the same installation skips the child. Any
change (LiteRT, numpy, this package's code, Python, CPU) re-probes. Failures are never
cached. See docs/models.md.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from edge_agent.probe.outcome import ProbeKey

logger = logging.getLogger(__name__)

#: Sub-folder of the agent's state dir that holds the :class:`ProbeCache`.
CACHE_DIR = "probe-cache"
#: Cached passes kept (the oldest are removed beyond this).
CACHE_KEEP = 32
_CACHE_FORMAT = 1
#: Modules outside this package whose code decides a test load (the child imports them).
_CODE_MODULES = ("edge_agent.runtime",)


@functools.cache
def installation() -> dict[str, Any]:
    """What a test load depends on besides the model and its options: the interpreter
    packages (each native library's name, size and mtime: an upgrade rewrites them), numpy,
    this code, Python and the CPU. Computed once per process, without importing LiteRT."""
    packages: dict[str, Any] = {}
    for name in ("ai_edge_litert", "tflite_runtime", "numpy"):
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            packages[name] = None
            continue
        folder = Path(spec.origin).parent
        packages[name] = {"path": str(folder), "files": _file_stamps(folder)}
    return {
        "format": _CACHE_FORMAT,
        "packages": packages,
        "code": _code_stamps(),
        "python": [sys.executable, sys.version, sys.implementation.cache_tag],
        "platform": [sys.platform, os.uname().machine if hasattr(os, "uname") else ""],
        "cpu": _cpu_flags(),
    }


def _code_stamps() -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every module of this package and of
    :data:`_CODE_MODULES`, paths relative to the ``edge_agent`` folder (modules found
    without importing them)."""
    package = Path(__file__).resolve().parent
    files = sorted(package.glob("*.py"))
    for module in _CODE_MODULES:
        spec = find_spec(module)
        if spec is not None and spec.origin is not None:
            files.append(Path(spec.origin).resolve())
    stamps: list[list[Any]] = []
    for path in files:
        name = path.relative_to(package.parent) if path.is_relative_to(package.parent) else path
        with contextlib.suppress(OSError):
            st = path.stat()
            stamps.append([name.as_posix(), st.st_size, st.st_mtime_ns])
    return stamps


def _file_stamps(folder: Path) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of the native libraries and ``__init__.py`` in ``folder``."""
    stamps: list[list[Any]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return stamps
    for entry in entries:
        wanted = entry.name == "__init__.py" or entry.name.endswith((".so", ".pyd", ".dylib"))
        if wanted and entry.is_file():
            st = entry.stat()
            stamps.append([entry.name, st.st_size, st.st_mtime_ns])
    return stamps


def _cpu_flags() -> str:
    """A digest of the CPU's feature flags (XNNPACK picks its kernels by them)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:  # noqa: PTH123
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class ProbeCache:
    """Models that passed the child test load on this installation (one small JSON file
    each in ``directory``), so a restart with the same model skips the child.

    An entry matches only the same model bytes (sha256), the same options (threads,
    default delegates) and the same :func:`installation`; anything else is a miss and the
    model is probed again. Failures are never cached. Unreadable entries are misses.
    """

    def __init__(self, directory: Path, *, keep: int = CACHE_KEEP) -> None:
        self.directory = Path(directory)
        self.keep = max(keep, 1)

    def _identity(self, key: ProbeKey) -> dict[str, Any]:
        return {"model": asdict(key), "installation": installation()}

    def path(self, key: ProbeKey) -> Path:
        """The file of ``key``'s entry on this installation."""
        return self._path(self._identity(key))

    def _path(self, identity: dict[str, Any]) -> Path:
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return self.directory / f"{hashlib.sha256(canonical.encode()).hexdigest()[:32]}.json"

    def get(self, key: ProbeKey) -> dict[str, Any] | None:
        """The child's report of an earlier pass of ``key`` on this installation, or None."""
        identity = self._identity(key)
        path = self._path(identity)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning('ignoring unreadable probe cache entry path="%s" error="%s"', path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("identity") != identity:
            return None
        report = entry.get("report")
        if not isinstance(report, dict) or report.get("ok") is not True:
            return None
        return report

    def put(self, key: ProbeKey, report: dict[str, Any]) -> None:
        """Remember a pass (best effort: a state dir that cannot be written only logs)."""
        identity = self._identity(key)
        path = self._path(identity)
        entry = {"identity": identity, "report": report, "passed_at": time.time()}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entry) + "\n")
            os.replace(tmp, path)
            self._prune()
        except OSError as exc:
            logger.warning('cannot write the probe cache dir="%s" error="%s"', self.directory, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Remove all but the ``keep`` newest entries (another agent may prune too)."""
        entries: list[tuple[int, Path]] = []
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(OSError):
                entries.append((path.stat().st_mtime_ns, path))
        entries.sort()
        for _, old in entries[: max(len(entries) - self.keep, 0)]:
            with contextlib.suppress(OSError):
                old.unlink()

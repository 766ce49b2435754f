"""Child processes of the benchmark: pinned to a core, timed, measured, stopped.

Every contender (the agent, the passthrough and naive loops, raw LiteRT, the TensorFlow
process) runs as its own ``python`` process so each pays its own imports and start-up, as a
user's process would, and so each can be pinned to the same core.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench.exceptions import BenchError

logger = logging.getLogger(__name__)


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_command(cmd: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    """``cmd`` prefixed with ``taskset -c`` (affinity inherited by every thread it starts)."""
    if not cpus:
        return list(cmd)
    taskset = shutil.which("taskset")
    if taskset is None:
        return list(cmd)  # pin_tree() after start is the fallback
    return [taskset, "-c", ",".join(str(c) for c in cpus), *cmd]


def pin_tree(pid: int, cpus: Sequence[int]) -> None:
    """Set the affinity of every thread of ``pid`` (``taskset -a -p``)."""
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, set(cpus))


def status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS) of ``/proc/<pid>/status``; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def python_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Child:
    """A child process with its log in a file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        *,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        cpus: Sequence[int] | None = None,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.cmd = pin_command(cmd, cpus)
        self.cpus = list(cpus) if cpus else None
        self.log_path = log_path
        self.env = env
        self.stdout_pipe = stdout_pipe
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            msg = f"{self.name} was not started"
            raise BenchError(msg)
        return self.proc.pid

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = dict(os.environ)
        env.update(self.env or {})
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.stdout_pipe else self._log,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        if self.cpus and not self.cmd[0].endswith("taskset"):
            pin_tree(self.proc.pid, self.cpus)
        logger.debug('started name="%s" pid=%d cmd="%s"', self.name, self.proc.pid, self.cmd)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            msg = (
                f"{self.name} exited with code {self.proc.returncode}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )
            raise BenchError(msg)

    def peak_rss_mb(self) -> float | None:
        kb = status_kb(self.pid, "VmHWM") if self.proc is not None else None
        return None if kb is None else kb / 1024.0

    def log_tail(self, lines: int = 25) -> str:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.flush()
        try:
            text = self.log_path.read_bytes()[-20000:].decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"

    def stop(self, timeout_s: float = 10.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning('name="%s" pid=%d ignored SIGTERM; killing it', self.name, proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_json(
    *, name: str, cmd: Sequence[str], log_path: Path, cpus: Sequence[int] | None, timeout_s: float
) -> dict[str, Any]:
    """Run a child to completion and parse the JSON object on the last line of its stdout."""
    child = Child(name=name, cmd=cmd, log_path=log_path, cpus=cpus, stdout_pipe=True).start()
    assert child.proc is not None
    try:
        out, _ = child.proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        child.stop()
        msg = f"{name} did not finish within {timeout_s:.0f} s; log: {child.log_path}"
        raise BenchError(msg) from exc
    code = child.proc.returncode
    child.stop()
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    if code != 0 or not lines:
        msg = f"{name} exited with code {code}; its log ({log_path}) ends with:\n{child.log_tail()}"
        raise BenchError(msg)
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        msg = f"{name} did not print a JSON line last: {lines[-1][:200]!r}"
        raise BenchError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{name} printed {type(data).__name__}, not a JSON object"
        raise BenchError(msg)
    return data

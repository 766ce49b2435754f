"""One test load in a child process (:class:`ProbeProcess`): started at once, read later.

The child is a new interpreter (``python -S -m edge_agent.probe -``, the model on stdin,
this process's ``sys.path``; again without ``-S`` if it cannot import its modules that
way), or, while this process is single-threaded (:func:`can_fork`), a fork of it made
right after numpy and LiteRT are imported. Either way a crash kills the child only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.probe.child import run_test_load
from edge_agent.probe.outcome import Outcome, ProbeKey, ProbeResult, interpret, last_json_line

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


def _root() -> str:
    """The folder that holds the ``edge_agent`` package (the child's first import path)."""
    return str(Path(__file__).resolve().parents[2])


def _child_command(num_threads: int, use_default_delegates: bool, *, fast: bool) -> list[str]:
    flags = ["-S"] if fast else []
    cmd = [sys.executable, *flags, "-m", "edge_agent.probe", "-", "--threads", str(num_threads)]
    if not use_default_delegates:
        cmd.append("--no-default-delegates")
    return cmd


def _child_env(*, fast: bool) -> dict[str, str]:
    env = dict(os.environ)
    if fast:  # no site: the child gets this process's sys.path (site-packages included)
        paths = [_root(), *(p for p in sys.path if p)]
    else:
        paths = [_root(), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # The child's log lines would only clutter the agent's stderr.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def can_fork() -> bool:
    """Whether a test load may fork this process instead of starting a new interpreter:
    Linux, and a single thread in the whole process (a lock held by another thread at the
    fork would stay locked in the child). In practice: the agent's start, before numpy
    (whose BLAS threads are fork-safe, it is imported after this check) and before the HTTP
    thread."""
    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class ProbeProcess:
    """One test load in a child process: started by the constructor, read by :meth:`result`.

    The child is a new interpreter (``python -S -m edge_agent.probe -``, the model on
    stdin), or with ``fork=True`` when :func:`can_fork`, a fork of this process made right
    after it imports numpy and LiteRT (which it needs anyway): the child then only loads and
    invokes the model (~30 ms instead of ~200 ms of interpreter start and imports). Either
    way a crash kills the child only. Never raises for a bad model: every failure is a
    :class:`ProbeResult` with ``ok`` False.
    """

    def __init__(
        self,
        model: bytes,
        *,
        what: str,
        num_threads: int = 1,
        use_default_delegates: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        fork: bool = False,
    ) -> None:
        self.key = ProbeKey.of(model, num_threads, use_default_delegates)
        self.what = what
        self.timeout_s = timeout_s
        #: "fork", "exec" (python -S) or "exec-site" (python with site, the fallback).
        self.mode = ""
        self._model = model
        self._proc: Any = None
        self._pid: int | None = None  # a forked child not yet reaped
        self._outcome: Outcome = None
        self._cancelled = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + timeout_s
        if not (fork and can_fork() and self._fork()):
            self._start(fast=True)

    # -------------------------------------------------------------- forked child

    def _fork(self) -> bool:
        """Fork a child that runs :func:`run_test_load`; False when this process cannot
        (checked by the caller with :func:`can_fork`, or no LiteRT: the exec'd child says so)."""
        try:
            import numpy  # noqa: F401  imported before the fork, so the child has them

            from edge_agent.runtime import select_backend

            select_backend()
        except Exception:  # noqa: BLE001
            return False
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it always ends in os._exit
            _forked_child(self._model, self.key, read_fd, write_fd)
        os.close(write_fd)
        self.mode = "fork"
        with self._lock:
            self._pid = pid
        threading.Thread(
            target=self._wait_forked, args=(pid, read_fd), name="model-probe", daemon=True
        ).start()
        return True

    def _wait_forked(self, pid: int, read_fd: int) -> None:
        import select

        chunks: list[bytes] = []
        timed_out = False
        try:
            while True:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([read_fd], [], [], left)
                if ready:
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        finally:
            os.close(read_fd)
        with self._lock:
            if timed_out:
                _kill(pid)
            _, status = os.waitpid(pid, 0)
            self._pid = None
        out = b"".join(chunks)
        self._outcome = "timeout" if timed_out else (os.waitstatus_to_exitcode(status), out, out)
        self._model = b""
        self._done.set()

    # ------------------------------------------------------------- exec'd child

    def _start(self, *, fast: bool) -> None:
        import subprocess

        cmd = _child_command(self.key.num_threads, self.key.use_default_delegates, fast=fast)
        self.mode = "exec" if fast else "exec-site"
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_env(fast=fast),
            )
        except OSError as exc:
            self._outcome = f"cannot start the test-load process: {exc}"
            self._done.set()
            return
        with self._lock:
            self._proc = proc
        threading.Thread(
            target=self._wait, args=(proc, fast), name="model-probe", daemon=True
        ).start()

    def _wait(self, proc: Any, fast: bool) -> None:
        import subprocess

        try:
            out, err = proc.communicate(
                self._model, timeout=max(self._deadline - time.monotonic(), 0.0)
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self._outcome = "timeout"
        except Exception as exc:  # noqa: BLE001  anything else is a refusal, never a crash
            proc.kill()
            self._outcome = f"test-load process failed: {type(exc).__name__}: {exc}"
        else:
            report = last_json_line(out.decode(errors="replace"))
            if fast and report is not None and report.get("import_error") and not self._cancelled:
                # No site processing was not enough for this installation (a .pth hook?):
                # the model was not tested yet, so test it with a normal interpreter.
                logger.info("test load without site failed to import (%s); retrying", report)
                self._start(fast=False)
                return
            self._outcome = (proc.returncode, out, err)
        self._model = b""
        self._done.set()

    # ------------------------------------------------------------------ common

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Kill the child if it still runs (its result is then a refusal)."""
        self._cancelled = True
        with self._lock:
            proc, pid = self._proc, self._pid
            if pid is not None:
                _kill(pid)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def result(self, what: str | None = None) -> ProbeResult:
        """Wait for the child; the messages name ``what`` (default: the constructor's)."""
        self._done.wait()
        return interpret(self._outcome, what or self.what, self.timeout_s)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _forked_child(model: bytes, key: ProbeKey, read_fd: int, write_fd: int) -> None:
    """The forked test load: report on ``write_fd`` (stdout and stderr go there too), then
    ``os._exit``: no atexit handler, buffer flush or ``finally`` of the parent runs here."""
    code = 1
    try:
        os.close(read_fd)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        logging.disable(logging.CRITICAL)  # the parent's handlers: its log is not ours
        report = run_test_load(
            model, num_threads=key.num_threads, use_default_delegates=key.use_default_delegates
        )
        os.write(write_fd, (json.dumps(report) + "\n").encode())
        code = 0 if report.get("ok") else 1
    except BaseException:  # noqa: BLE001  reported as "exited with code 1 without a report"
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)

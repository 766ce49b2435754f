"""Test-load a model in a child process before the agent loads it.

A corrupt or hostile ``.tflite`` that still passes LiteRT's flatbuffer verifier can crash
the interpreter with a segfault (seen here: an operator whose required input index is -1).
In-process, that would kill the agent; in a child it is a refusal with a clear reason.

The parent sends the model bytes on stdin (so the child tests exactly the bytes the agent
verified and will load) and reads one JSON line back. The child imports numpy and LiteRT
only, never TensorFlow: ``python -m edge_agent.probe - [--threads N] [--no-default-delegates]``
or ``python -m edge_agent.probe BUNDLE_DIR``. The agent starts it with ``python -S`` and
its own ``sys.path`` (no ``site`` processing: a cheaper start), and again without ``-S``
if the child cannot import its modules that way.

Start-up cost, for the agent's cold start (docs/agent.md, "Start-up"):

* :class:`ProbeProcess` starts the child at once and is read later. The agent starts the
  test load of its first model before anything else (:meth:`Prober.start`), and as long as
  it is single-threaded (:func:`can_fork`) the child is a *fork* of the agent made right
  after numpy and LiteRT are imported, so it only loads and invokes the model. The agent
  imports the rest, serves HTTP and verifies the bundle meanwhile; :meth:`Prober.probe`
  hands the child's result to the model store for the same bytes (sha256) and options.
* :class:`ProbeCache` remembers models that passed, in the agent's state dir, keyed by the
  model's sha256, the test-load options and the installation that ran it (LiteRT, numpy,
  this code, Python, CPU): restarting the same model on the same installation skips the
  child; any change re-probes. Failures are never cached. See docs/models.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
#: Samples per batch the child runs after the load-time invoke.
_PROBE_BATCH = 3
#: Sub-folder of the agent's state dir that holds the :class:`ProbeCache`.
CACHE_DIR = "probe-cache"
#: Cached passes kept (the oldest are removed beyond this).
CACHE_KEEP = 32
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ProbeResult:
    """What the child process found: ``ok`` or an ``error`` text naming the cause.

    ``cached`` is True when no child ran because the same model passed before
    (:class:`ProbeCache`).
    """

    ok: bool
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    returncode: int = 0
    cached: bool = False


@dataclass(frozen=True)
class ProbeKey:
    """What a test load depends on besides the installation: the bytes and the options."""

    sha256: str
    num_threads: int
    use_default_delegates: bool


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _root() -> str:
    return str(Path(__file__).resolve().parent.parent)


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
        self.key = ProbeKey(hashlib.sha256(model).hexdigest(), num_threads, use_default_delegates)
        self.what = what
        self.timeout_s = timeout_s
        #: "fork", "exec" (python -S) or "exec-site" (python with site, the fallback).
        self.mode = ""
        self._model = model
        self._proc: Any = None
        self._pid: int | None = None  # a forked child not yet reaped
        self._outcome: tuple[int, bytes, bytes] | str | None = None
        self._cancelled = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + timeout_s
        if not (fork and can_fork() and self._fork()):
            self._start(fast=True)

    # -------------------------------------------------------------- forked child

    def _fork(self) -> bool:
        """Fork a child that runs :func:`_child`; False when this process cannot (checked
        by the caller with :func:`can_fork`, or no LiteRT: the exec'd child says so)."""
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
            report = _last_json_line(out.decode(errors="replace"))
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
        return _interpret(self._outcome, what or self.what, self.timeout_s)


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
        report = _child(
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


def _interpret(
    outcome: tuple[int, bytes, bytes] | str | None, what: str, timeout_s: float
) -> ProbeResult:
    if outcome == "timeout":
        return ProbeResult(
            ok=False,
            error=f"test load of {what} did not finish within {timeout_s:g} s: refused",
            returncode=-int(signal.SIGKILL),
        )
    if not isinstance(outcome, tuple):
        return ProbeResult(ok=False, error=str(outcome))
    returncode, out, err = outcome
    stderr = err.decode(errors="replace").strip()
    if returncode < 0:
        number = -returncode
        return ProbeResult(
            ok=False,
            error=(
                f"LiteRT crashed (signal {number}, {_signal_name(number)}) loading {what} in "
                "the test-load process: the model file is corrupt; refused"
            ),
            returncode=returncode,
        )
    report = _last_json_line(out.decode(errors="replace"))
    if report is None:
        tail = stderr.splitlines()[-3:] if stderr else []
        return ProbeResult(
            ok=False,
            error=(
                f"test load of {what} exited with code {returncode} without a report: "
                f"{' | '.join(tail) or 'no output'}"
            ),
            returncode=returncode,
        )
    if not report.get("ok"):
        return ProbeResult(
            ok=False,
            error=str(report.get("error", "unknown error")),
            details=report,
            returncode=returncode,
        )
    return ProbeResult(ok=True, details=report, returncode=returncode)


def probe_model(
    model: bytes,
    *,
    what: str,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Load and invoke ``model`` in a child Python process; never raises for a bad model."""
    return ProbeProcess(
        model,
        what=what,
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
        timeout_s=timeout_s,
    ).result()


def probe_bundle(
    bundle_dir: Path,
    *,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """:func:`probe_model` on ``bundle_dir/model.tflite`` (the bundle is not verified here)."""
    from stream.bundle import MODEL_FILE

    path = Path(bundle_dir) / MODEL_FILE
    try:
        model = path.read_bytes()
    except OSError as exc:
        return ProbeResult(ok=False, error=f"cannot read {path}: {exc}")
    return probe_model(
        model,
        what=str(path),
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
        timeout_s=timeout_s,
    )


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


# ------------------------------------------------------------------------ cache


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
    here = Path(__file__).resolve().parent
    return {
        "format": _CACHE_FORMAT,
        "packages": packages,
        "code": _file_stamps(here, names=("probe.py", "runtime.py")),
        "python": [sys.executable, sys.version, sys.implementation.cache_tag],
        "platform": [sys.platform, os.uname().machine if hasattr(os, "uname") else ""],
        "cpu": _cpu_flags(),
    }


def _file_stamps(folder: Path, names: tuple[str, ...] | None = None) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of ``names`` in ``folder`` (default: its native libraries
    and ``__init__.py``)."""
    stamps: list[list[Any]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return stamps
    for entry in entries:
        if names is not None:
            wanted = entry.name in names
        else:
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


class Prober:
    """The test loads of one model store.

    :meth:`start` begins a test load ahead of time (the agent does this for ``--bundle``
    before its imports); :meth:`probe` takes the result of one started for the same bytes
    and options, else runs one. With a :class:`ProbeCache`, a model that passed before on
    this installation needs no child at all, and new passes are remembered.
    """

    def __init__(
        self, *, cache: ProbeCache | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.cache = cache
        self.timeout_s = timeout_s
        self._started: dict[ProbeKey, ProbeProcess] = {}
        self._lock = threading.Lock()
        #: Test loads run in a child (cache misses), for tests and logs.
        self.children = 0

    def start(
        self, model: bytes, *, what: str, num_threads: int = 1, use_default_delegates: bool = True
    ) -> ProbeKey:
        """Start the test load of ``model`` now (nothing when it is cached or running); in
        a forked child when this process is still single-threaded (:func:`can_fork`)."""
        key = ProbeKey(hashlib.sha256(model).hexdigest(), num_threads, use_default_delegates)
        if self.cache is not None and self.cache.get(key) is not None:
            return key
        with self._lock:
            if key not in self._started:
                self._started[key] = ProbeProcess(
                    model,
                    what=what,
                    num_threads=num_threads,
                    use_default_delegates=use_default_delegates,
                    timeout_s=self.timeout_s,
                    fork=True,
                )
                self.children += 1
        return key

    def probe(
        self,
        model: bytes,
        *,
        what: str,
        num_threads: int = 1,
        use_default_delegates: bool = True,
        timeout_s: float | None = None,
    ) -> ProbeResult:
        """The test load of exactly these bytes with these options (never raises for a bad
        model): a cached pass, the result of a child started by :meth:`start`, or a new one."""
        key = ProbeKey(hashlib.sha256(model).hexdigest(), num_threads, use_default_delegates)
        if self.cache is not None:
            report = self.cache.get(key)
            if report is not None:
                logger.info(
                    "test load skipped: this model passed it before on this installation "
                    'what="%s" sha256=%s',
                    what,
                    key.sha256[:12],
                )
                return ProbeResult(ok=True, details=report, cached=True)
        with self._lock:
            running = self._started.pop(key, None)
            if running is None:
                self.children += 1
        if running is None:
            running = ProbeProcess(
                model,
                what=what,
                num_threads=num_threads,
                use_default_delegates=use_default_delegates,
                timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            )
        result = running.result(what)
        if result.ok and self.cache is not None:
            self.cache.put(key, result.details)
        return result

    def close(self) -> None:
        """Kill test loads started ahead of time that nobody asked for."""
        with self._lock:
            started, self._started = list(self._started.values()), {}
        for running in started:
            running.cancel()


# ------------------------------------------------------------------------ child


def _child(model: bytes, *, num_threads: int, use_default_delegates: bool) -> dict[str, Any]:
    try:
        import numpy as np

        from edge_agent.exceptions import AgentError
        from edge_agent.runtime import load_runtime
    except ImportError as exc:  # the parent retries with a normal interpreter
        return {"ok": False, "import_error": True, "error": f"{type(exc).__name__}: {exc}"}

    try:
        runtime = load_runtime(
            model_content=model,
            num_threads=num_threads,
            use_default_delegates=use_default_delegates,
        )
        shape = [int(d) for d in runtime.input_spec.shape[1:] if d is not None]
        out = runtime.run(np.zeros((_PROBE_BATCH, *shape), dtype=np.float32))
        if out.shape[0] != _PROBE_BATCH or not np.all(np.isfinite(out)):
            msg = f"the model's output on zeros is {out.shape} with non-finite values"
            raise ValueError(msg)
    except (AgentError, ValueError, RuntimeError) as exc:
        return {"ok": False, "error": str(exc), "tensorflow_imported": "tensorflow" in sys.modules}
    return {
        "ok": True,
        "runtime": runtime.name,
        "batchable": runtime.batchable,
        "uses_default_delegates": runtime.uses_default_delegates,
        "input": asdict(runtime.input_spec),
        "output": asdict(runtime.output_spec),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.probe",
        description="Test-load a .tflite model (from stdin '-' or a bundle folder) and "
        "print one JSON line: {ok, error | runtime, batchable, ...}.",
    )
    parser.add_argument("source", help="'-' to read the model from stdin, or a bundle folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-default-delegates", action="store_true")
    args = parser.parse_args(argv)
    if args.source == "-":
        model = sys.stdin.buffer.read()
    else:
        from stream.bundle import MODEL_FILE

        path = Path(args.source)
        model = (path / MODEL_FILE if path.is_dir() else path).read_bytes()
    report = _child(
        model, num_threads=args.threads, use_default_delegates=not args.no_default_delegates
    )
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())

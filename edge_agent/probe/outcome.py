"""What a test load is of (:class:`ProbeKey`) and what it found (:class:`ProbeResult`).

:func:`interpret` turns what the child process left behind (its exit code, stdout and
stderr, or a reason it never ran to the end) into a :class:`ProbeResult` whose ``error``
names the cause: a crash by signal, a timeout, a child that exited without its report,
or the child's own refusal.
"""

from __future__ import annotations

import hashlib
import json
import signal
from dataclasses import dataclass, field
from typing import Any

#: What a child left: ``(returncode, stdout, stderr)``; ``"timeout"``; or why it never ran.
Outcome = tuple[int, bytes, bytes] | str | None


@dataclass(frozen=True)
class ProbeResult:
    """What the child process found: ``ok`` or an ``error`` text naming the cause.

    ``cached`` is True when no child ran because the same model passed before
    (:class:`~edge_agent.probe.cache.ProbeCache`).
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

    @classmethod
    def of(cls, model: bytes, num_threads: int, use_default_delegates: bool) -> ProbeKey:
        """The key of a test load of ``model`` with these options."""
        return cls(hashlib.sha256(model).hexdigest(), num_threads, use_default_delegates)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object (the child's report), or None."""
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


def interpret(outcome: Outcome, what: str, timeout_s: float) -> ProbeResult:
    """The :class:`ProbeResult` of a test load of ``what`` that ended in ``outcome``."""
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
    report = last_json_line(out.decode(errors="replace"))
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

"""Test-load a model in a child process before the agent loads it.

A corrupt or hostile ``.tflite`` that still passes LiteRT's flatbuffer verifier can crash
the interpreter with a segfault (seen here: an operator whose required input index is -1).
In-process, that would kill the agent; in a child it is a refusal with a clear reason.

The parent sends the model bytes on stdin (so the child tests exactly the bytes the agent
verified and will load) and reads one JSON line back. The child imports numpy and LiteRT
only, never TensorFlow: ``python -m edge_agent.probe - [--threads N] [--no-default-delegates]``
or ``python -m edge_agent.probe BUNDLE_DIR``.

One module per concern:

* :mod:`.child`: the test load as the child runs it, and its command line.
* :mod:`.process`: :class:`ProbeProcess`, one child (forked or exec'd), started at once and
  read later; :func:`can_fork`.
* :mod:`.outcome`: :class:`ProbeKey` (bytes and options), :class:`ProbeResult`, and how a
  child's exit code and output become one.
* :mod:`.cache`: :class:`ProbeCache` and the :func:`installation` fingerprint it keys on.
* :mod:`.prober`: :class:`Prober`, the coordinator a model store uses (a child started
  ahead of time, the cache), and the one-shot :func:`probe_model` / :func:`probe_bundle`.

Start-up cost, for the agent's cold start (docs/agent.md, "Start-up"): the agent starts
the test load of its first model before anything else (:meth:`Prober.start`), and as long
as it is single-threaded the child is a *fork* of the agent made right after numpy and
LiteRT are imported, so it only loads and invokes the model. A model that passed before on
the same installation skips the child (:class:`ProbeCache`, see docs/models.md).
"""

from __future__ import annotations

from edge_agent.probe.cache import CACHE_DIR, CACHE_KEEP, ProbeCache, installation
from edge_agent.probe.outcome import ProbeKey, ProbeResult
from edge_agent.probe.prober import Prober, probe_bundle, probe_model
from edge_agent.probe.process import DEFAULT_TIMEOUT_S, ProbeProcess, can_fork

__all__ = [
    "CACHE_DIR",
    "CACHE_KEEP",
    "DEFAULT_TIMEOUT_S",
    "ProbeCache",
    "ProbeKey",
    "ProbeProcess",
    "ProbeResult",
    "Prober",
    "can_fork",
    "installation",
    "probe_bundle",
    "probe_model",
]

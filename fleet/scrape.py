"""Reading an agent's HTTP endpoints: one GET, its Prometheus text, the ``/readyz`` wait.

The one client of ``/metrics`` and ``/readyz`` for ``edgeinfer top`` and ``edgeinfer
demo``, the benchmark harness and the tests. Prometheus text is read by prometheus-client's
own parser (``text_string_to_metric_families``), never by hand.

It lives in ``fleet/`` because that is the package that watches agents from the outside
and already depends on prometheus-client: ``stream/`` may not (the wire contract imports
kafka-python, numpy and the standard library only), and ``edge_agent/`` serves these
endpoints and has no reason to read them. Importing it costs the standard library only;
the parser is imported when text is parsed.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream.exceptions import EdgeInferError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Sample


def base_url(agent: str) -> str:
    """``http://host:port`` of ``agent`` given as ``host:port`` or ``http://host:port[/]``."""
    base = agent if agent.startswith("http") else f"http://{agent}"
    return base.rstrip("/")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """``(status, body)`` of GET ``url``; ``(0, the error)`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (an agent's URL)
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8", "replace")
    except (OSError, ValueError) as err:  # URLError is an OSError; ValueError: a bad URL
        return 0, str(err)


# ------------------------------------------------------------------ Prometheus text


def families(text: str) -> Iterable[Metric]:
    """The metric families of Prometheus text, by prometheus-client's parser; ValueError
    when the text is not the exposition format."""
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families(text)


def samples(text: str) -> Iterator[Sample]:
    """Every sample of Prometheus text (``name``, ``labels``, ``value``)."""
    for family in families(text):
        yield from family.samples


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of the first sample ``name`` whose labels include ``labels``; None if absent."""
    for sample in samples(text):
        if sample.name == name and all(
            sample.labels.get(k) == v for k, v in (labels or {}).items()
        ):
            return float(sample.value)
    return None


def metric_sums(text: str) -> dict[str, float]:
    """``{sample name: value summed over its label sets}`` (``_bucket`` over its bounds too)."""
    sums: dict[str, float] = {}
    for sample in samples(text):
        sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    return sums


# ------------------------------------------------------------------ readiness


class NotReady(EdgeInferError):
    """Agents whose ``/readyz`` did not answer 200 in time (:func:`wait_ready`)."""

    def __init__(self, pending: list[str], timeout_s: float) -> None:
        self.pending = pending
        self.timeout_s = timeout_s
        super().__init__(f"agents {pending} not ready after {timeout_s:.0f} s")


@dataclass(frozen=True)
class Readiness:
    """When an agent answered, on the ``time.perf_counter()`` clock."""

    #: The first HTTP answer of any status (the server is up).
    first_answer: float
    #: The first 200 from ``/readyz``.
    ready: float


def wait_ready(
    agents: Iterable[str],
    *,
    timeout_s: float,
    check: Callable[[], None] | None = None,
    poll_s: float = 0.1,
    request_timeout_s: float = 1.0,
) -> dict[str, Readiness]:
    """Wait until every agent (``host:port`` or a base URL) answers 200 on ``/readyz``.

    ``check`` runs before every round and stops the wait by raising (an agent that exited,
    a Ctrl-C). Raises :class:`NotReady` naming the agents still pending at ``timeout_s``.
    """
    deadline = time.perf_counter() + timeout_s
    first: dict[str, float | None] = dict.fromkeys(agents)
    ready: dict[str, Readiness] = {}
    while True:
        if check is not None:
            check()
        for agent in first:
            if agent in ready:
                continue
            status, _ = http_get(f"{base_url(agent)}/readyz", timeout=request_timeout_s)
            now = time.perf_counter()
            if status and first[agent] is None:
                first[agent] = now
            answered = first[agent]
            if status == 200 and answered is not None:
                ready[agent] = Readiness(first_answer=answered, ready=now)
        if len(ready) == len(first):
            return ready
        if time.perf_counter() >= deadline:
            raise NotReady(sorted(set(first) - set(ready)), timeout_s)
        time.sleep(poll_s)

"""``--cluster host:port,... --worker-index N``: the workers of a multi-machine training.

Parsed and checked here without TensorFlow (a bad flag fails before the import);
:func:`trainer.device.select_device` turns it into a ``MultiWorkerMirroredStrategy``. Without
``--cluster``, TensorFlow's own ``TF_CONFIG`` variable (read by TensorFlow's
``TFConfigClusterResolver``, the form Kubernetes operators and Vertex AI set) is used when it
names a cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trainer.exceptions import TrainerConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """Every worker's ``host:port`` (the same list, in the same order, on every worker)."""

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes the model, the report and the bundles."""
        return self.index == 0


def parse_cluster(text: str | None, index: int | None) -> Cluster | None:
    """``--cluster`` and ``--worker-index`` -> :class:`Cluster` (None without ``--cluster``)."""
    if not text:
        if index is not None:
            msg = "--worker-index needs --cluster host1:port,host2:port (every worker's address)"
            raise TrainerConfigError(msg)
        return None
    workers = tuple(w.strip() for w in text.split(",") if w.strip())
    for worker in workers:
        host, _, port = worker.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            msg = f"--cluster: {worker!r} is not host:port (e.g. trainer-0.trainer:2222)"
            raise TrainerConfigError(msg)
    if len(set(workers)) != len(workers):
        msg = f"--cluster lists a worker twice: {text!r}"
        raise TrainerConfigError(msg)
    if index is None or not 0 <= index < len(workers):
        msg = (
            f"--worker-index must be this worker's position in --cluster, 0..{len(workers) - 1}"
            f", got {index}"
        )
        raise TrainerConfigError(msg)
    return Cluster(workers=workers, index=index)

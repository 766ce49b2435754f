"""Logging setup for the command line. Libraries only call ``logging.getLogger``."""

from __future__ import annotations

import logging

from stream.env import edge_environment


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once, leaving handlers a user installed alone."""
    name = (level or edge_environment().get("log_level") or "INFO").upper()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")
        )
        root.addHandler(handler)
    root.setLevel(getattr(logging, name, logging.INFO))
    for noisy in ("kafka", "urllib3", "absl", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

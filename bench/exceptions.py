"""Errors of the benchmark."""

from __future__ import annotations

from stream.exceptions import EdgeInferError


class BenchError(EdgeInferError):
    """A benchmark step could not run (a child died, a deadline passed, a tool is missing)."""

"""Errors the trainer raises on purpose. All derive from :class:`stream.exceptions.EdgeInferError`,
so the CLI prints them as ``error: ...`` with exit code 2."""

from __future__ import annotations

from stream.exceptions import ConfigError, EdgeInferError


class TrainerError(EdgeInferError):
    """Training or exporting a model failed for a reason the user can act on."""


class TrainerConfigError(TrainerError, ConfigError):
    """An argument of ``train``/``export`` is wrong. The message names it and the fix."""


class QuantizationError(TrainerError):
    """A quantization config is unusable (e.g. int8 without representative data)."""


class ExportError(TrainerError):
    """A model could not be converted to a LiteRT flatbuffer."""


class EvaluationError(TrainerError):
    """A converted model could not be run in LiteRT."""

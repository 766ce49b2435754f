"""The project's exception hierarchy: one root, one class per concern.

Every error the project raises on purpose derives from :class:`EdgeInferError`, so a
caller can catch the project's errors without catching programming mistakes.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Why untrusted bytes could not be decoded (docs/wire-format.md, "Error reasons").
DecodeReason = Literal[
    "not_json",
    "missing_field",
    "wrong_type",
    "non_finite",
    "too_large",
    "unknown_content_type",
    "corrupt_image",
    "image_too_large",
    "wrong_shape",
    "wrong_dtype",
    "bad_header",
    "out_of_order",
]


class EdgeInferError(Exception):
    """Root of every error raised on purpose by edgeinfer."""


class ConfigError(EdgeInferError):
    """A setting is missing or wrong. The message names the setting and the fix."""


class DecodeError(EdgeInferError):
    """Untrusted bytes could not be decoded into a message of the wire contract.

    ``reason`` is a short, stable, bounded machine-readable code (used as a metric label
    and as the dead letter's ``error-type`` header); ``str(err)`` is the human message.
    """

    #: The closed set of reasons (:data:`DecodeReason`); a metric label, so it stays bounded.
    REASONS: tuple[DecodeReason, ...] = get_args(DecodeReason)

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            msg = f"unknown decode reason {reason!r}; add it to DecodeError.REASONS"
            raise ValueError(msg)
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        return (type(self), (self.reason, self.message))


class BrokerError(EdgeInferError):
    """The embedded broker could not start, or a Kafka operation failed."""


class BundleError(EdgeInferError):
    """A model bundle is malformed, tampered with, or fails verification."""


class DatasetError(EdgeInferError):
    """A dataset could not be loaded or is unusable (empty, one class, NaN, ...)."""

"""Errors raised by the edge agent.

Every class derives from :class:`AgentError`, itself an
:class:`stream.exceptions.EdgeInferError`, so the CLI prints them as ``error: ...`` and a
caller can catch the agent's errors without catching programming mistakes.
"""

from __future__ import annotations

from stream.exceptions import BundleError, ConfigError, EdgeInferError


class AgentError(EdgeInferError):
    """Root of every error raised on purpose by the edge agent."""


class AgentConfigError(AgentError, ConfigError):
    """An agent setting is missing or wrong; the message names the setting and the fix."""


class ModelLoadError(AgentError):
    """A model file could not be loaded or invoked by any available runtime."""


class ModelRefusedError(AgentError, BundleError):
    """A bundle was refused: bad sha256, bad or missing signature, wrong task, failed test load."""


class NoModelError(AgentError):
    """No model became available (source empty, every candidate refused) before the deadline."""


class PipelineError(AgentError):
    """The pipeline cannot carry on (e.g. the input topic does not exist)."""


class DeliveryError(AgentError):
    """A result or dead letter could not be acknowledged by the broker; nothing was committed."""

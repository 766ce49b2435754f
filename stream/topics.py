"""Topic names of the wire contract (DESIGN.md). Every CLI takes ``--topic`` to override."""

from __future__ import annotations

SENSORS = "sensors"
IMAGES = "images"
RESULTS = "inference.results"
DEADLETTER = "inference.deadletter"
MODELS = "models"
#: Inputs the agents capture for labelling and retraining (docs/wire-format.md, "Samples").
SAMPLES = "samples"
#: True labels of inputs, keyed to the input's topic/partition/offset (docs/wire-format.md,
#: "Feedback"); `edgeinfer monitor` joins them with results into online accuracy.
FEEDBACK = "feedback"

ALL_TOPICS: tuple[str, ...] = (SENSORS, IMAGES, RESULTS, DEADLETTER, MODELS, SAMPLES, FEEDBACK)

# Header names carried on input messages and results.
H_CONTENT_TYPE = "content-type"
H_DEVICE_ID = "device-id"
H_TS = "ts"
H_LABEL = "label"  # the true label, written by `edgeinfer replay` for accuracy downstream
# Dead-letter headers (DESIGN.md).
H_ERROR_TYPE = "error-type"
H_ERROR_MESSAGE = "error-message"
H_SOURCE_TOPIC = "source-topic"
H_SOURCE_PARTITION = "source-partition"
H_SOURCE_OFFSET = "source-offset"
H_AGENT_ID = "agent-id"
# On a dead letter whose original value (and headers) could not be produced: what was left
# out, so it can still be identified (docs/wire-format.md, "Dead letters").
H_ORIGINAL_SIZE = "original-size"
H_ORIGINAL_SHA256 = "original-sha256"
H_VALUE_DROPPED = "value-dropped"
# Sample headers (docs/wire-format.md, "Samples"): why the input was captured and what the
# model said; the source and agent headers above say where it came from.
H_SAMPLE_REASON = "sample-reason"
H_SAMPLE_MODEL = "sample-model"
H_SAMPLE_VERSION = "sample-version"
H_SAMPLE_LABEL = "sample-label"
H_SAMPLE_SCORE = "sample-score"
H_SAMPLE_SCORES = "sample-scores"
H_SAMPLE_DRIFT = "sample-drift"
H_SOURCE_LAST_OFFSET = "source-last-offset"

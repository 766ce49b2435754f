"""How big each benchmark case is: the full preset (real numbers) and the quick one (a check)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

Case = Literal[
    "model_bound",
    "client_bound",
    "naive",
    "client_library",
    "latency",
    "footprint",
    "scale_out",
    "quantization",
    "monitoring",
    "decoding",
]
CASES: tuple[Case, ...] = get_args(Case)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Sizes and durations of one benchmark run (see :meth:`quick` and :meth:`full`)."""

    quick: bool
    #: Preloaded JPEG frames per MobileNetV2 agent run (model-bound, scale-out).
    image_frames: int
    #: Frames produced in one burst per scale-out run (at least a few seconds of work).
    scale_frames: int
    #: Preloaded messages per client-bound run (digits PNGs, sensor chunks).
    small_messages: int
    #: Preloaded small JSON readings per client-library run.
    json_messages: int
    #: Preloaded messages for the naive Keras loop (it is slow: it stops at the time cap).
    naive_messages: int
    #: A run stops when its results are all in or after this many seconds of results.
    measure_cap_s: float
    #: Alternations of each pair: passthrough/agent pairs per client-bound stream; runs in
    #: turns with raw LiteRT of the agent on its other client, per model-bound variant.
    repeats: int
    #: Runs in turns with raw LiteRT (bench/turns.py) of the default agent per model-bound
    #: variant: raw LiteRT processes started alike ran 1-7% apart, so the median needs more.
    model_bound_repeats: int
    #: Offered rates for latency under load, as fractions of one agent's measured capacity.
    load_fractions: tuple[float, ...]
    #: Seconds each offered rate is produced.
    load_seconds: float
    #: Measurements of each offered rate (rounds over all rates, a fresh agent each): at
    #: 90% of capacity a stall of a second takes ~9 s to drain, so one 12-s step's p99
    #: moved from 85 to 689 ms between runs of one commit; the median of the rounds is
    #: judged, and every round's p99 is reported.
    load_repeats: int
    #: Cold starts measured (the median is reported).
    footprint_repeats: int
    #: Seconds of py-spy sampling when a goal is missed (0 = no profile).
    profile_seconds: float
    #: Trainer epochs for the quantization table (None = the trainer's default).
    train_epochs: int | None
    threads: int = 1
    max_batch: int = 32
    #: Seconds of each turn when the agent and raw LiteRT share the core in turns
    #: (model-bound; bench/turns.py).
    turn_s: float = 0.5
    max_latency_ms: float = 0.0  # the agent's default
    #: Commit every N messages in the naive loop.
    naive_commit_every: int = 100
    cases: tuple[Case, ...] = CASES

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(quick=False, **{name: full for name, (full, _) in _PRESETS.items()})

    @classmethod
    def quick_preset(cls) -> BenchConfig:
        return cls(quick=True, **{name: quick for name, (_, quick) in _PRESETS.items()})

    def only(self, cases: tuple[Case, ...]) -> BenchConfig:
        return replace(self, cases=cases)


#: The presets side by side: field -> (full, quick).
_PRESETS: dict[str, tuple[Any, Any]] = {
    "image_frames": (3000, 1200),
    "scale_frames": (6000, 1500),
    "small_messages": (20_000, 6000),
    "json_messages": (50_000, 6000),
    "naive_messages": (3000, 300),
    "measure_cap_s": (45.0, 12.0),
    # Alternations of each side-by-side pair: the quick mode needs as many as the full one
    # for its ratios to agree run to run (its runs are shorter instead).
    "repeats": (3, 3),
    "model_bound_repeats": (5, 5),
    "load_fractions": ((0.25, 0.5, 0.75, 0.9, 1.0, 1.25), (0.5, 1.0, 1.25)),
    "load_seconds": (12.0, 4.0),
    "load_repeats": (3, 1),
    "footprint_repeats": (3, 1),
    "profile_seconds": (10.0, 4.0),
    "train_epochs": (None, 3),
}


def parse_cases(text: str | None) -> tuple[Case, ...]:
    """``"latency,footprint"`` -> the cases, in the canonical order; all when empty."""
    if not text:
        return CASES
    wanted = {part.strip().replace("-", "_") for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(CASES))
    if unknown:
        msg = f"unknown case(s) {unknown} in --only; choose from {', '.join(CASES)}"
        raise ValueError(msg)
    return tuple(c for c in CASES if c in wanted)

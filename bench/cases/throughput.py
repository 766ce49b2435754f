"""Throughput cases: agent vs raw LiteRT, vs passthrough, vs the naive Keras loop; clients.

Each ratio's two sides run on the same core with the same preloaded messages: the agent and
raw LiteRT in turns (bench/turns.py), the other pairs one after the other, alternating.

Why one module of this size: the four throughput cases share the preloaded-input set-up,
the contenders' starters and the ratio arithmetic written here; split one per file, each
would import the others' private helpers. Each case is one function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.assets import (
    digits_images,
    digits_models,
    frames,
    mobilenet_models,
    sensor_models,
    sensor_windows,
)
from bench.harness import AgentChild, Harness, Run, Topics
from bench.kafka_io import ResultsReader
from bench.messages import (
    Message,
    chunk_maker,
    chunk_messages,
    expected_windows,
    fit_windows,
    jpeg_maker,
    jpeg_messages,
    png_messages,
    reading_messages,
)
from bench.models import window_of
from bench.procs import Child
from bench.stats import median, paired_ratios, ratio, rounded, spread
from bench.turns import agent_vs_raw_in_turns
from stream.bundle import MODEL_FILE

logger = logging.getLogger(__name__)

SENSOR_DEVICES = 16


def agent_starter(
    h: Harness, name: str, bundle: Path, client: str | None = None
) -> Callable[[Topics], AgentChild]:
    return lambda t: h.agent(name=name, bundle=bundle, topics=t, client=client)


def confluent_installed() -> bool:
    """The agent's librdkafka transport (``--client confluent``) can run."""
    return find_spec("confluent_kafka") is not None


#: The passthrough loop (``bench/loops.py`` mode) on each client library.
LOOP_MODES = {"kafka-python": "passthrough", "confluent": "confluent"}


def clients() -> tuple[str, str | None]:
    """The client the agent's default (``--client auto``) runs on here, and the other one
    when it can run too (the bench measures both; goals judge the default)."""
    from edge_agent.transport import resolve_client

    default = resolve_client("auto")
    if default == "confluent":
        return default, "kafka-python"
    return default, "confluent" if confluent_installed() else None


def slug(client: str) -> str:
    """``kafka-python`` -> ``kafka_python`` (summary keys)."""
    return client.replace("-", "_")


def loop_starter(
    h: Harness,
    name: str,
    mode: str,
    *,
    bundle: Path | None = None,
    keras: Path | None = None,
    work: str = "decode",
) -> Callable[[Topics], Child]:
    return lambda t: h.loop(name=name, mode=mode, topics=t, bundle=bundle, keras=keras, work=work)


# ---------------------------------------------------------------------- 1. model-bound


def _in_turns(
    h: Harness,
    variant: str,
    bundle: Path,
    inputs: Path,
    msgs: list[Message],
    client: str | None,
    i: int,
) -> dict[str, Any]:
    """Run ``i`` of the agent (on ``client``, None = the default) in turns with raw LiteRT."""
    tag = f"{client}-" if client else ""
    return agent_vs_raw_in_turns(
        h,
        label=f"agent{f' ({client})' if client else ''} mobilenet {variant} #{i + 1}",
        prefix=f"mobilenet-{tag}{variant}",
        messages=msgs,
        start=agent_starter(h, f"agent-{tag}mobilenet-{variant}-{i + 1}", bundle, client),
        model=bundle / MODEL_FILE,
        inputs=inputs,
    )


def model_bound(h: Harness) -> None:
    """The agent and raw LiteRT share the core in turns (bench/turns.py); the headline is
    the median over runs of each run's agent rate over its best raw rate."""
    ms = mobilenet_models(h)
    assert ms.inputs_path is not None
    inputs = ms.inputs_path
    default, other = clients()
    msgs = jpeg_messages(frames(), h.config.image_frames)
    out: dict[str, Any] = {
        "frames": len(msgs),
        "input": "JPEG 96x96 RGB, quality 85",
        "client": default,
        "turn_s": h.config.turn_s,
    }
    for variant in ("int8", "float32"):
        bundle = ms.bundles[variant]
        runs = [
            _in_turns(h, variant, bundle, inputs, msgs, None, i)
            for i in range(h.config.model_bound_repeats)
        ]
        pairs = spread([r["ratio"] for r in runs])
        h.spreads[f"agent_vs_raw_mobilenet_{variant}"] = pairs
        r = pairs["median"]
        agent_rate = median([x["agent_per_s"] for x in runs if x["agent_per_s"]])
        raw_best = median([x["raw_best_per_s"] for x in runs if x["raw_best_per_s"]])
        # The time split comes from a run on its own: in turns, a batch stopped mid-invoke
        # would count the others' turns as its inference time.
        alone = h.run_preloaded(
            label=f"agent mobilenet {variant} (time split, alone)",
            prefix=f"mobilenet-alone-{variant}",
            messages=msgs,
            start=agent_starter(h, f"agent-mobilenet-{variant}-alone", bundle),
        )
        share = alone.extra.get("inference_share")
        h.summary[f"agent_vs_raw_mobilenet_{variant}"] = rounded(r)
        h.summary[f"mobilenet_{variant}_agent_per_s"] = rounded(agent_rate, 1)
        h.summary[f"mobilenet_{variant}_raw_per_s"] = rounded(raw_best, 1)
        h.summary[f"mobilenet_{variant}_agent_inference_share"] = rounded(share)
        out[variant] = {
            "runs": runs,
            "raw_per_s": rounded(raw_best, 1),
            "agent": {
                "per_s": rounded(agent_rate, 1),
                "inference_share": rounded(share),
                "infer_ms_per_input": alone.extra.get("agent_infer_ms_per_input"),
                "alone_per_s": rounded(alone.per_s, 1),
            },
            "alone": alone.as_dict(),
            "ratio": rounded(r),
            "ratios": pairs,
        }
        if other is not None:
            # The same agent on the other client library, in turns with raw LiteRT too.
            cf = [
                _in_turns(h, variant, bundle, inputs, msgs, other, i)
                for i in range(h.config.repeats)
            ]
            cf_pairs = spread([x["ratio"] for x in cf])
            cf_r = cf_pairs["median"]
            h.summary[f"agent_{slug(other)}_vs_raw_mobilenet_{variant}"] = rounded(cf_r)
            h.spreads[f"agent_{slug(other)}_vs_raw_mobilenet_{variant}"] = cf_pairs
            out[variant]["agent_other"] = {
                "client": other,
                "per_s": rounded(median([x["agent_per_s"] for x in cf if x["agent_per_s"]]), 1),
                "runs": cf,
                "ratio": rounded(cf_r),
                "ratios": cf_pairs,
            }
            h.progress(f"agent ({other})/raw mobilenet {variant}: {_r(cf_r)} {_range(cf_pairs)}")
        if variant == "int8" and agent_rate:
            h.capacity["mobilenet-int8"] = agent_rate
        h.progress(
            f"agent/raw mobilenet {variant}: {_r(r)} {_range(pairs)} "
            f"(alone, the agent spent {_pct(share)} of its time in inference)"
        )
    h.details["model_bound"] = out


# ---------------------------------------------------------------------- 2. client-bound


def sensor_messages(bundle: Path, count: int) -> tuple[list[Message], int]:
    """Chunks holding one full model window each, and the number of results they yield."""
    window, stride, _channels = window_of(bundle)
    windows = fit_windows(sensor_windows(), window)
    msgs = chunk_messages(windows, count, devices=SENSOR_DEVICES)
    expected = expected_windows(
        count, devices=SENSOR_DEVICES, chunk=window, window=window, stride=stride
    )
    return msgs, expected


def client_bound(h: Harness) -> None:
    n = h.config.small_messages
    digits = digits_models(h).bundles["float32"]
    sensor = sensor_models(h).bundles["float32"]
    s_msgs, s_expected = sensor_messages(sensor, n)
    cases = (
        (
            "digits",
            digits,
            png_messages(digits_images(), n),
            n,
            "PNG 8x8 gray (scikit-learn digits)",
        ),
        ("sensor", sensor, s_msgs, s_expected, "JSON chunks, one BasicMotions window (100x6) each"),
    )
    out: dict[str, Any] = {}
    default, other = clients()
    h.summary["default_client"] = default
    for name, bundle, msgs, expected, what in cases:
        # The default agent (--client auto) against the passthrough on its library.
        pts, ags = _alternate(h, name, bundle, msgs, expected, client=None, library=default)
        # The same pair on the other library.
        cpts, cags = (
            _alternate(h, name, bundle, msgs, expected, client=other, library=other)
            if other is not None
            else ([], [])
        )
        pt_rate = median([x.per_s for x in pts if x.per_s])
        ag_rate = median([x.per_s for x in ags if x.per_s])
        pairs = spread(paired_ratios([x.per_s for x in ags], [x.per_s for x in pts]))
        r = pairs["median"]
        h.summary[f"agent_vs_passthrough_{name}"] = rounded(r)
        h.spreads[f"agent_vs_passthrough_{name}"] = pairs
        h.summary[f"{name}_agent_per_s"] = rounded(ag_rate, 1)
        h.summary[f"{name}_passthrough_per_s"] = rounded(pt_rate, 1)
        out[name] = {
            "messages": len(msgs),
            "input": what,
            "client": default,
            "bundle": str(bundle),
            "passthrough": {"per_s": rounded(pt_rate, 1), "runs": [x.as_dict() for x in pts]},
            "agent": {"per_s": rounded(ag_rate, 1), "runs": [x.as_dict() for x in ags]},
            "ratio": rounded(r),
            "ratios": pairs,
        }
        h.progress(f"agent/passthrough {name}: {_r(r)} {_range(pairs)}")
        if cags and other is not None:
            cpt_rate = median([x.per_s for x in cpts if x.per_s])
            cag_rate = median([x.per_s for x in cags if x.per_s])
            cpairs = spread(paired_ratios([x.per_s for x in cags], [x.per_s for x in cpts]))
            cr = cpairs["median"]
            # Alternation i of the other pair against alternation i of the default one.
            speedups = spread(paired_ratios([x.per_s for x in cags], [x.per_s for x in ags]))
            speedup = speedups["median"]
            o = slug(other)
            h.summary[f"agent_{o}_vs_passthrough_{o}_{name}"] = rounded(cr)
            h.summary[f"agent_{o}_vs_agent_{name}"] = rounded(speedup)
            h.summary[f"{name}_agent_{o}_per_s"] = rounded(cag_rate, 1)
            h.spreads[f"agent_{o}_vs_passthrough_{o}_{name}"] = cpairs
            h.spreads[f"agent_{o}_vs_agent_{name}"] = speedups
            out[name]["other"] = {
                "client": other,
                "passthrough": {
                    "per_s": rounded(cpt_rate, 1),
                    "runs": [x.as_dict() for x in cpts],
                },
                "agent": {"per_s": rounded(cag_rate, 1), "runs": [x.as_dict() for x in cags]},
                "ratio": rounded(cr),
                "ratios": cpairs,
                "agent_vs_default_agent": rounded(speedup),
                "agent_vs_default_agent_ratios": speedups,
            }
            h.progress(
                f"agent/passthrough {name} on {other}: {_r(cr)}; "
                f"agent {other}/{default}: {_r(speedup)}"
            )
    h.details["client_bound"] = out


def _alternate(
    h: Harness,
    name: str,
    bundle: Path,
    msgs: list[Message],
    expected: int,
    *,
    client: str | None,
    library: str,
) -> tuple[list[Run], list[Run]]:
    """Passthrough and agent runs, alternating: the agent with ``--client client`` (None =
    its default, which runs on ``library``), the passthrough on ``library``."""
    tag = "" if client is None else f"{client}-"
    shown = "" if client is None else f" ({client})"
    loop_mode = LOOP_MODES[library]
    pts: list[Run] = []
    ags: list[Run] = []
    for i in range(h.config.repeats):
        pts.append(
            h.run_preloaded(
                label=f"passthrough{shown} {name} #{i + 1}",
                prefix=f"passthrough-{tag}{name}",
                messages=msgs,
                expected=expected,
                start=loop_starter(h, f"passthrough-{tag}{name}-{i + 1}", loop_mode, bundle=bundle),
            )
        )
        ags.append(
            h.run_preloaded(
                label=f"agent{shown} {name} #{i + 1}",
                prefix=f"agent-{tag}{name}",
                messages=msgs,
                expected=expected,
                start=agent_starter(h, f"agent-{tag}{name}-{i + 1}", bundle, client),
            )
        )
    return pts, ags


# ---------------------------------------------------------------------- 3. naive loop


def paced_latency(
    h: Harness,
    *,
    label: str,
    prefix: str,
    start: Callable[[Topics], Child | AgentChild],
    make: Callable[[int, int], Message],
    rate: float,
    seconds: float,
    unmeasured_s: float = 0.0,
) -> dict[str, Any]:
    """End-to-end latency of one contender at one offered rate (after warming it, and
    ``unmeasured_s`` of the rate before the measured ``seconds``)."""
    topics = h.topics(prefix)
    with ResultsReader(h.settings, topics.output) as reader:
        handle = start(topics)
        child = handle.child if isinstance(handle, AgentChild) else handle
        try:
            if isinstance(handle, AgentChild):
                handle.wait_ready()
            h.warm(reader, topics, make, child=child)
            if unmeasured_s > 0:
                h.paced_step(
                    reader, topics, make, rate=rate, seconds=unmeasured_s, check=child.check_alive
                )
            step = h.paced_step(
                reader, topics, make, rate=rate, seconds=seconds, check=child.check_alive
            )
        finally:
            child.stop()
    h.progress(
        f"{label} at {rate:.1f}/s: achieved {step['achieved']}/s, "
        f"e2e p50 {step['p50']} ms, p99 {step['p99']} ms"
    )
    return step


def naive(h: Harness) -> None:
    c = h.config
    out: dict[str, Any] = {}
    sensor = sensor_models(h)
    mobile = mobilenet_models(h)
    s_bundle = sensor.bundles["float32"]
    window, _stride, _ch = window_of(s_bundle)
    s_windows = fit_windows(sensor_windows(), window)
    cases = (
        (
            "sensor",
            s_bundle,
            sensor.keras_path,
            "sensor",
            chunk_maker(s_windows, devices=SENSOR_DEVICES),
        ),
        ("image", mobile.bundles["float32"], mobile.keras_path, "image", jpeg_maker(frames())),
    )
    for name, bundle, keras_path, kind, make in cases:
        if kind == "sensor":
            n_msgs, n_expected = sensor_messages(bundle, c.naive_messages)
            a_msgs, a_expected = sensor_messages(bundle, c.small_messages)
        else:
            n_msgs = jpeg_messages(frames(), c.naive_messages)
            a_msgs = jpeg_messages(frames(), c.image_frames)
            n_expected, a_expected = len(n_msgs), len(a_msgs)
        nv = h.run_preloaded(
            label=f"naive keras {name}",
            prefix=f"naive-{name}",
            messages=n_msgs,
            expected=n_expected,
            start=loop_starter(h, f"naive-{name}", "naive", bundle=bundle, keras=keras_path),
            idle_s=180.0,
        )
        ag = h.run_preloaded(
            label=f"agent {name} (float32)",
            prefix=f"agent-naive-{name}",
            messages=a_msgs,
            expected=a_expected,
            start=agent_starter(h, f"agent-naive-{name}", bundle),
        )
        r = ratio(ag.per_s, nv.per_s)
        h.summary[f"agent_vs_naive_{name}"] = rounded(r)
        entry: dict[str, Any] = {
            "naive": nv.as_dict(),
            "agent": ag.as_dict(),
            "throughput_ratio": rounded(r),
        }
        if nv.per_s:
            rate = max(nv.per_s * 0.5, 1.0)
            lat_n = paced_latency(
                h,
                label=f"naive keras {name}",
                prefix=f"naive-lat-{name}",
                start=loop_starter(
                    h, f"naive-lat-{name}", "naive", bundle=bundle, keras=keras_path
                ),
                make=make,
                rate=rate,
                seconds=c.load_seconds,
            )
            lat_a = paced_latency(
                h,
                label=f"agent {name}",
                prefix=f"agent-lat-{name}",
                start=agent_starter(h, f"agent-lat-{name}", bundle),
                make=make,
                rate=rate,
                seconds=c.load_seconds,
            )
            p99_ratio = ratio(lat_n.get("p99"), lat_a.get("p99"))
            entry.update(
                {
                    "latency_rate_per_s": round(rate, 2),
                    "naive_latency": lat_n,
                    "agent_latency": lat_a,
                    "p99_naive_over_agent": rounded(p99_ratio),
                }
            )
            h.summary[f"naive_over_agent_p99_{name}"] = rounded(p99_ratio)
        out[name] = entry
        h.progress(
            f"agent/naive {name}: throughput {_r(r)}, "
            f"p99 naive/agent {_r(entry.get('p99_naive_over_agent'))}"
        )
    h.details["naive"] = out


# ---------------------------------------------------------------------- 4. client library


def client_library(h: Harness) -> None:
    msgs = reading_messages(h.config.json_messages)
    runs: dict[str, Run] = {}
    for lib, mode in (("kafka-python", "passthrough"), ("confluent-kafka", "confluent")):
        runs[lib] = h.run_preloaded(
            label=f"{lib} echo",
            prefix=f"client-{mode}",
            messages=msgs,
            start=loop_starter(h, f"client-{lib}", mode, work="echo"),
        )
    r = ratio(runs["confluent-kafka"].per_s, runs["kafka-python"].per_s)
    h.summary["confluent_vs_kafka_python"] = rounded(r)
    h.details["client_library"] = {
        "messages": len(msgs),
        "input": (
            "small JSON readings (6 floats), echoed: consume, produce, commit what is "
            "acknowledged (asynchronously, as the agent)"
        ),
        "runs": {k: v.as_dict() for k, v in runs.items()},
        "ratio": rounded(r),
    }
    h.progress(f"confluent-kafka / kafka-python: {_r(r)}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _r(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _range(pairs: dict[str, Any]) -> str:
    if not pairs.get("runs"):
        return ""
    return f"(min {pairs['min']:.2f}, max {pairs['max']:.2f} over {len(pairs['runs'])})"

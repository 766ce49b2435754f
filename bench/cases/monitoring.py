"""What on-device monitoring and sample capture cost (``--only monitoring``).

Two measurements, side by side in one run, on the client-bound workloads (digits PNGs and
BasicMotions sensor chunks, the same preloaded messages as the client-bound case):

* **end to end**: the agent with monitoring off (``--no-monitor``) and on (the defaults:
  monitoring, and sample capture at 0.2 samples/s) alternate on the same core, each side
  first in turn, several runs each; medians, extremes and spread of the throughput and
  of the agent's CPU time per result (less sensitive to a busy machine), and on/off;
* **per input**: the work monitoring adds (``bench.monitor_cost``: CPU time of
  ``Monitoring.batch`` per input at the agent's measured mean batch, and of one publish
  every 0.5 s), as a share of the time per input at the fastest monitoring-off rate of
  the run. The goal: under 5% of the client-bound rate. The end-to-end difference is the
  check on it; on a shared machine it is within the run-to-run spread.

Bundles built before the manifest carried reference statistics get a copy with them
(from the dataset's training split), so the drift path is always measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.assets import digits_images, digits_models, sensor_models, sensor_windows
from bench.cases.throughput import sensor_messages
from bench.harness import AgentChild, Harness, Run, Topics
from bench.messages import fit_windows, png_messages
from bench.models import window_of
from bench.procs import python_command, run_json
from bench.stats import median, ratio, rounded, spread
from stream.bundle import MANIFEST_FILE, MODEL_FILE, read_manifest, write_bundle

logger = logging.getLogger(__name__)

#: Housekeeping (and so Monitoring.publish) runs every this many seconds.
PUBLISH_EVERY_S = 0.5


def with_reference(h: Harness, bundle: Path, dataset: str) -> Path:
    """``bundle`` when its manifest has reference statistics, else a copy that has them."""
    manifest = read_manifest(bundle)
    if manifest.reference is not None:
        return bundle
    out = h.cache / "monitoring" / f"{manifest.name}-{manifest.variant}"
    if (out / MANIFEST_FILE).is_file() and read_manifest(out).reference is not None:
        return out
    from stream.datasets import load_dataset
    from trainer.reference import build_reference

    ds = load_dataset(dataset)
    reference = build_reference(ds.x_train, ds.kind)
    h.progress(f"{manifest.name}: no reference statistics in the bundle; a copy with them")
    write_bundle(
        out,
        replace(manifest, reference=reference, signature=None),
        (bundle / MODEL_FILE).read_bytes(),
    )
    return out


def _starter(
    h: Harness, name: str, bundle: Path, extra: Sequence[str]
) -> Callable[[Topics], AgentChild]:
    return lambda t: h.agent(name=name, bundle=bundle, topics=t, extra_args=extra)


def run(h: Harness) -> None:
    c = h.config
    n = c.small_messages
    repeats = 2 if c.quick else 3
    digits = with_reference(h, digits_models(h).bundles["float32"], "digits")
    sensor = with_reference(h, sensor_models(h).bundles["float32"], "basic-motions")
    s_msgs, s_expected = sensor_messages(sensor, n)
    window = window_of(sensor)[0]
    cases = (
        ("digits", digits, png_messages(digits_images(), n), n, digits_images()),
        ("sensor", sensor, s_msgs, s_expected, fit_windows(sensor_windows(), window)),
    )
    out: dict[str, Any] = {}
    for name, bundle, msgs, expected, raw in cases:
        off: list[Run] = []
        on: list[Run] = []
        sides: list[tuple[str, list[Run], list[str]]] = [
            ("off", off, ["--no-monitor"]),
            ("on", on, []),
        ]
        for i in range(repeats):
            # Alternating, and in turn first (off-on, on-off, ...): a load change or a
            # first-of-a-pair effect shifts both sides alike.
            for side, runs, extra in sides if i % 2 == 0 else sides[::-1]:
                runs.append(
                    h.run_preloaded(
                        label=f"agent {name} monitoring {side} #{i + 1}",
                        prefix=f"monitor-{side}-{name}",
                        messages=msgs,
                        expected=expected,
                        start=_starter(h, f"agent-monitor-{side}-{name}-{i + 1}", bundle, extra),
                    )
                )
        off_rates = [r.per_s for r in off if r.per_s]
        on_rates = [r.per_s for r in on if r.per_s]
        off_cpu = [r.extra["cpu_us_per_result"] for r in off if r.extra.get("cpu_us_per_result")]
        on_cpu = [r.extra["cpu_us_per_result"] for r in on if r.extra.get("cpu_us_per_result")]
        batches = [r.extra["agent_mean_batch"] for r in on if r.extra.get("agent_mean_batch")]
        batch = max(1, round(median(batches) or c.max_batch))
        inputs = h.cache / "monitoring" / f"{name}-inputs.npy"
        inputs.parent.mkdir(parents=True, exist_ok=True)
        np.save(inputs, np.asarray(raw))
        seconds = 1.0 if c.quick else 2.0
        micro = run_json(
            name=f"monitoring cost {name}",
            cmd=python_command(
                "bench.monitor_cost",
                *("--bundle", str(bundle), "--inputs", str(inputs), "--batch", str(batch)),
                *("--seconds", str(seconds), "--repeats", "3" if c.quick else "5"),
            ),
            log_path=h.logs / f"monitor-cost-{name}.log",
            cpus=[h.cpu],
            timeout_s=seconds * 10 * 2 + 120,
        )
        fastest = max(off_rates) if off_rates else None
        publish_s = float(micro["publish_us"]["median"]) / 1e6 / PUBLISH_EVERY_S
        shares = {}
        for case in ("typical", "flood"):
            us = float(micro[case]["median"])
            shares[case] = None if fastest is None else us * fastest / 1e6 + publish_s
        on_vs_off = ratio(median(on_rates), median(off_rates))
        cpu_on_vs_off = ratio(median(on_cpu), median(off_cpu))
        h.summary[f"monitoring_cost_share_{name}"] = rounded(shares["typical"], 4)
        if fastest is not None:  # the share of each in-process repeat
            h.spreads[f"monitoring_cost_share_{name}"] = spread(
                [us * fastest / 1e6 + publish_s for us in micro["typical"]["runs"]], 4
            )
        h.summary[f"monitoring_cpu_on_vs_off_{name}"] = rounded(cpu_on_vs_off)
        h.summary[f"monitoring_flood_cost_share_{name}"] = rounded(shares["flood"], 4)
        h.summary[f"monitoring_on_vs_off_{name}"] = rounded(on_vs_off)
        out[name] = {
            "messages": len(msgs),
            "bundle": str(bundle),
            "monitoring_off": {**spread(off_rates, 1), "detail": [r.as_dict() for r in off]},
            "monitoring_on": {**spread(on_rates, 1), "detail": [r.as_dict() for r in on]},
            "on_vs_off": rounded(on_vs_off),
            "cpu_us_per_result_off": spread(off_cpu, 1),
            "cpu_us_per_result_on": spread(on_cpu, 1),
            "cpu_on_vs_off": rounded(cpu_on_vs_off),
            "per_input": {
                "batch": batch,
                "us_per_input": micro["typical"],
                "flood_us_per_input": micro["flood"],
                "publish_us": micro["publish_us"],
                "reference": micro.get("reference"),
                "client_bound_per_s": rounded(fastest, 1),
                "share_of_client_bound": rounded(shares["typical"], 4),
                "flood_share_of_client_bound": rounded(shares["flood"], 4),
            },
        }
        h.progress(
            f"monitoring {name}: {float(micro['typical']['median']):.1f} us/input "
            f"(flood {float(micro['flood']['median']):.1f}) = "
            f"{_pct(shares['typical'])} of the client-bound {fastest or 0:,.0f}/s; "
            f"end to end on/off {on_vs_off or 0:.3f} (off spread "
            f"{out[name]['monitoring_off']['spread']}, on spread "
            f"{out[name]['monitoring_on']['spread']}), CPU per result on/off "
            f"{cpu_on_vs_off or 0:.3f}"
        )
    h.details["monitoring"] = out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"

"""The model store on real models: sources, verification, child test-load, pin, rollback.

The models are tiny real LiteRT models converted here with TensorFlow (tests may import it;
the agent never does). The ``models`` topic tests run against the real embedded broker.

Why one module of this size: every test here needs the tiny real models built at the top,
and the other model tests import them from this module (test_agent_model_supply.py,
test_agent_models_swap.py); the tests follow the store's concerns in the order above.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.exceptions import ModelRefusedError, NoModelError
from edge_agent.metrics import AgentMetrics
from edge_agent.model_store import LoadedModel, ModelStore
from edge_agent.probe import ProbeCache, Prober, probe_bundle, probe_model
from edge_agent.sources import BundleDirSource, ModelSource, ModelsTopicSource, RegistrySource
from stream.announcements import announce
from stream.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    TensorSpec,
    generate_keys,
    load_private_key,
    write_bundle,
)
from stream.kafka import ensure_topics, make_producer
from stream.preprocessing import ImagePreprocessing
from stream.registry import Registry
from stream.settings import KafkaSettings
from tests.fixtures.signing import TEST_SIGNING_KEY, write_public_key

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NAME = "tiny-digits"


# ------------------------------------------------------------------ models and bundles


@functools.cache
def build_tiny_models() -> dict[str, bytes]:
    """A tiny 8x8 CNN (the digits images are 8x8 grayscale) as float32 and int8 models."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    x = np.random.default_rng(1).random((32, 8, 8, 1), dtype=np.float32)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    out: dict[str, bytes] = {}
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    out["float32"] = bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in x)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    out["int8"] = bytes(conv.convert())
    return out


@functools.cache
def tiny_specs() -> dict[str, tuple[TensorSpec, TensorSpec]]:
    """The input and output spec of each tiny model, as a trainer would write them."""
    from edge_agent.runtime import load_runtime

    out = {}
    for variant, model in build_tiny_models().items():
        runtime = load_runtime(model_content=model)
        out[variant] = (runtime.input_spec, runtime.output_spec)
    return out


def write_tiny_bundle(
    folder: Path,
    version: str,
    *,
    private_key: Any = None,
    model: bytes | None = None,
    variant: str = "int8",
    task: str = "image-classification",
) -> Path:
    """A bundle of the tiny model (or of ``model`` bytes described as ``variant``)."""
    spec = tiny_specs()[variant]
    manifest = Manifest(
        name=NAME,
        version=version,
        variant=variant,
        task=task,
        input=spec[0],
        output=spec[1],
        preprocessing=ImagePreprocessing(height=8, width=8, channels=1),
        labels=[str(i) for i in range(10)],
    )
    content = model if model is not None else build_tiny_models()[variant]
    write_bundle(folder, manifest, content, private_key=private_key)
    return folder


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, bytes]:
    pytest.importorskip("keras")
    return build_tiny_models()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The suite's signing key (the agent fixtures trust it) and another one."""
    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder / "other.key", folder / "other.pub")
    return {
        "private": TEST_SIGNING_KEY,
        "public": TEST_SIGNING_KEY.public_key(),
        "public_path": write_public_key(folder / "test.pub"),
        "other": load_private_key(folder / "other.key"),
    }


@pytest.fixture
def make(
    tiny_models: dict[str, bytes], keys: dict[str, Any], tmp_path: Path
) -> Callable[..., Path]:
    """``make(version, where=DIR, model=bytes, variant=..., signed=True, key=None, task=...)``."""

    def build(
        version: str,
        *,
        where: Path | None = None,
        model: bytes | None = None,
        variant: str = "int8",
        signed: bool = True,
        key: Any = None,
        task: str = "image-classification",
    ) -> Path:
        folder = where if where is not None else tmp_path / "bundles" / version
        private = (key or keys["private"]) if signed else None
        return write_tiny_bundle(
            folder, version, private_key=private, model=model, variant=variant, task=task
        )

    return build


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics(registry=CollectorRegistry())


def swaps(metrics: AgentMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("edge_agent_model_swaps_total", {"result": result})
    return float(value or 0.0)


def served_version(metrics: AgentMetrics) -> list[str]:
    return [
        s.labels["version"]
        for family in metrics.registry.collect()
        if family.name == "edge_agent_model_info"
        for s in family.samples
        if s.value == 1
    ]


@pytest.fixture
def store_factory(tmp_path: Path, keys: dict[str, Any], metrics: AgentMetrics) -> Any:
    made: list[ModelStore] = []

    def build(
        source: ModelSource, *, pin: str | None = None, key: bool = True, **options: Any
    ) -> ModelStore:
        store = ModelStore(
            source=source,
            model_name=NAME,
            public_key=keys["public"] if key else None,
            allow_unsigned=not key,
            num_threads=1,
            pinned_version=pin,
            metrics=metrics,
            state_dir=tmp_path / "state",
            probe_timeout_s=60.0,
            **options,
        )
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def poll_until(store: ModelStore, version: str, timeout_s: float = 60.0) -> LoadedModel:
    deadline = time.monotonic() + timeout_s
    while True:
        model = store.poll(block=True)
        if model is not None and model.version == version:
            return model
        if time.monotonic() >= deadline:
            pytest.fail(f"store did not switch to {version} in {timeout_s:.0f} s; {store.refused}")
        time.sleep(0.05)


def serves(model: LoadedModel) -> np.ndarray:
    """The model answers (a real invoke) with one probability row per input."""
    y = model.runtime.run(np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32))
    assert y.shape == (3, 10) and np.allclose(y.sum(axis=1), 1.0, atol=0.05)
    return y


# ------------------------------------------------------------------------ registry


def test_registry_source_picks_newest_and_follows_new_versions(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    for v in ("20250101000000", "20250102000000"):
        registry.publish(make(v))
    store = store_factory(RegistrySource(registry.root, NAME))
    model = store.load_initial(timeout_s=30)
    assert model.version == "20250102000000"
    assert store.current() is model
    serves(model)
    assert served_version(metrics) == ["20250102000000"]
    assert store.poll() is None  # nothing new

    registry.publish(make("20250103000000"))
    new = poll_until(store, "20250103000000")
    serves(new)
    assert store.current() is new
    assert store.previous is model
    assert swaps(metrics, "ok") == 1
    assert served_version(metrics) == ["20250103000000"]
    assert store.poll() is None


def test_versions_sort_naturally(make: Any, registry: Registry, store_factory: Any) -> None:
    for v in ("9", "10", "2"):
        registry.publish(make(v))
    assert RegistrySource(registry.root, NAME).versions() == ["2", "9", "10"]
    assert store_factory(RegistrySource(registry.root, NAME)).load_initial(30).version == "10"


def test_pin_wins_over_newest(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    for v in ("1", "2", "3"):
        registry.publish(make(v))
    # --pin on this agent
    assert (
        store_factory(RegistrySource(registry.root, NAME), pin="1").load_initial(30).version == "1"
    )
    # the registry's pin file (edgeinfer pin/rollback) for the fleet
    registry.pin(NAME, "2")
    store = store_factory(RegistrySource(registry.root, NAME))
    assert store.load_initial(30).version == "2"
    registry.publish(make("4"))
    assert store.poll(block=True) is None  # still pinned to 2
    assert store.current().version == "2"
    # --pin beats the pin file
    assert (
        store_factory(RegistrySource(registry.root, NAME), pin="3").load_initial(30).version == "3"
    )
    # unpinned: follows the newest again
    registry.unpin(NAME)
    assert poll_until(store, "4").version == "4"


def test_pinned_version_missing_waits_and_says_so(
    make: Any, registry: Registry, store_factory: Any
) -> None:
    registry.publish(make("1"))
    store = store_factory(RegistrySource(registry.root, NAME), pin="7")
    with pytest.raises(NoModelError, match=r"versions seen: 1; pinned to 7"):
        store.load_initial(timeout_s=1.0)


def test_rollback_in_process_and_through_the_registry_pin(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    registry.publish(make("1"))
    # the pin file below the highest version served moves only an agent that trusts it
    store = store_factory(RegistrySource(registry.root, NAME), trust_registry_pin=True)
    v1 = store.load_initial(30)
    registry.publish(make("2"))
    v2 = poll_until(store, "2")

    back = store.rollback()
    assert back is v1 and store.current() is v1  # the same loaded model: no reload
    assert swaps(metrics, "rollback") == 1
    assert served_version(metrics) == ["1"]
    assert store.poll() is v1  # the serving loop is handed the rolled-back model once
    assert store.poll(block=True) is None  # and stays there though 2 is newer
    serves(back)

    store.unpin()
    assert poll_until(store, "2") is v2  # forward again, v2 still loaded

    # `edgeinfer rollback` writes the registry's pin file: the agent follows it
    registry.pin(NAME, "1")
    assert poll_until(store, "1") is v1
    assert swaps(metrics, "rollback") == 2


def test_rollback_needs_a_previous_version(make: Any, store_factory: Any) -> None:
    store = store_factory(BundleDirSource(make("1")))
    store.load_initial(30)
    with pytest.raises(NoModelError, match="no previous model version to roll back to"):
        store.rollback()


# ---------------------------------------------------------------- refusals


def _start_on_v1(
    make: Any, registry: Registry, store_factory: Any
) -> tuple[ModelStore, LoadedModel]:
    registry.publish(make("1"))
    store = store_factory(RegistrySource(registry.root, NAME))
    return store, store.load_initial(30)


def _refused_once(store: ModelStore, metrics: AgentMetrics, version: str, match: str) -> None:
    assert store.poll(block=True) is None
    assert version in store.refused, store.refused
    assert match in store.refused[version], store.refused[version]
    assert swaps(metrics, "refused") == 1
    # remembered: the next polls neither retry nor count it again
    for _ in range(3):
        assert store.poll(block=True) is None
    assert swaps(metrics, "refused") == 1
    assert store.refused_count == 1


def test_tampered_model_file_is_refused_and_the_old_model_keeps_serving(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    path = registry.publish(make("2"))
    model = bytearray((path / MODEL_FILE).read_bytes())
    model[len(model) // 2] ^= 0x01
    (path / MODEL_FILE).write_bytes(bytes(model))
    _refused_once(store, metrics, "2", "does not match the manifest")
    assert store.current() is v1
    serves(v1)
    assert served_version(metrics) == ["1"]


def test_tampered_signed_manifest_is_refused(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    path = registry.publish(make("2"))
    data = json.loads((path / MANIFEST_FILE).read_text())
    data["labels"] = list(reversed(data["labels"]))  # same model, relabelled
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    _refused_once(store, metrics, "2", "signature does not verify")
    assert store.current() is v1


def test_bundle_signed_by_another_key_is_refused(
    make: Any, keys: dict[str, Any], registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    registry.publish(make("2", key=keys["other"]))
    _refused_once(store, metrics, "2", "signature does not verify")


def test_unsigned_bundle_is_refused_when_a_key_is_configured(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    registry.publish(make("2", signed=False))
    _refused_once(store, metrics, "2", "unsigned and a public key is configured")
    assert store.current() is v1
    # without a key, unsigned bundles are accepted
    plain = store_factory(RegistrySource(registry.root, NAME), key=False)
    assert plain.load_initial(30).version == "2"


def test_refused_newest_falls_back_to_the_newest_good_version_at_start(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    registry.publish(make("1"))
    registry.publish(make("2", signed=False))
    store = store_factory(RegistrySource(registry.root, NAME))
    assert store.load_initial(30).version == "1"
    assert set(store.refused) == {"2"}


def _crashing_mutation(model: bytes) -> bytes:
    """The model with one operator's required input replaced by -1 ("no tensor"): it passes
    LiteRT's flatbuffer verifier and segfaults the interpreter (RESHAPE's shape input)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(model)
    graph = schema.Model.GetRootAs(buf, 0)
    subgraph = graph.Subgraphs(0)
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        code = graph.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.RESHAPE and op.InputsLength() > 1:
            op.InputsAsNumpy()[1] = -1  # a writable view into buf
            return bytes(buf)
    pytest.fail("the tiny model has no RESHAPE operator to corrupt")


def _corruptions(model: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    flipped = bytearray(model)
    for pos in rng.integers(0, len(model), 16):
        flipped[pos] ^= 0xFF
    return {
        "random": rng.bytes(4096),
        "truncated": model[: len(model) // 3],
        "flipped": bytes(flipped),
        "segfault": _crashing_mutation(model),
    }


def test_the_crashing_model_really_kills_a_process_that_loads_it(
    tiny_models: dict[str, bytes], tmp_path: Path
) -> None:
    """Why the child test-load exists: this model segfaults LiteRT in-process."""
    path = tmp_path / "crash.tflite"
    path.write_bytes(_crashing_mutation(tiny_models["float32"]))
    code = textwrap.dedent(
        f"""
        from edge_agent.runtime import load_runtime
        load_runtime(model_path={str(path)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode < 0, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("kind", ["random", "truncated", "flipped", "segfault"])
def test_corrupt_signed_model_is_refused_by_the_child_test_load(
    make: Any,
    tiny_models: dict[str, bytes],
    registry: Registry,
    store_factory: Any,
    metrics: AgentMetrics,
    kind: str,
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    bad = _corruptions(tiny_models["float32"])[kind]
    # correctly hashed and signed: only the test load can catch it
    registry.publish(make("2", model=bad, variant="float32"))
    expected = "LiteRT crashed (signal 11" if kind == "segfault" else "cannot"
    _refused_once(store, metrics, "2", expected)
    assert store.current() is v1
    serves(v1)  # this process survived and still serves


def test_probe_reports_the_runtime_and_never_imports_tensorflow(
    make: Any,
) -> None:
    result = probe_bundle(make("1"))
    assert result.ok, result.error
    assert result.details["runtime"] == "ai_edge_litert"
    assert result.details["tensorflow_imported"] is False
    assert result.details["batchable"] is True


def test_probe_command_line_on_a_bundle_folder(make: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.probe", str(make("1")), "--threads", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["input"]["dtype"] == "int8"


def test_probe_that_does_not_finish_in_time_is_a_refusal(tiny_models: dict[str, bytes]) -> None:
    result = probe_model(tiny_models["int8"], what="slow model", timeout_s=0.01)
    assert not result.ok
    assert "test load of slow model did not finish within 0.01 s: refused" in result.error


def _forked_test_load(model: bytes, path: Path) -> list[Any]:
    """``[mode, ok, error, runtime]`` of a ProbeProcess(fork=True) in a fresh interpreter
    (single-threaded, as ``edgeinfer agent`` is when it starts its test load)."""
    path.write_bytes(model)
    code = textwrap.dedent(
        f"""
        import json, pathlib
        from edge_agent.probe import ProbeProcess, can_fork
        assert can_fork()
        p = ProbeProcess(pathlib.Path({str(path)!r}).read_bytes(), what="m", fork=True)
        r = p.result()
        print(json.dumps([p.mode, r.ok, r.error, r.details.get("runtime")]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # the parent survived
    result: list[Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_forked_test_load_refuses_a_crashing_model_and_passes_a_good_one(
    tiny_models: dict[str, bytes], tmp_path: Path
) -> None:
    """The agent's start-up test load forks; a crash still kills the child only."""
    crash = _forked_test_load(_crashing_mutation(tiny_models["float32"]), tmp_path / "c.tflite")
    mode, ok, error, _ = crash
    assert (mode, ok) == ("fork", False)
    assert error.startswith("LiteRT crashed (signal 11, SIGSEGV) loading m in the test-load")
    good = _forked_test_load(tiny_models["int8"], tmp_path / "g.tflite")
    assert good == ["fork", True, "", "ai_edge_litert"]


def test_a_child_that_cannot_import_without_site_is_run_again_with_it(
    tiny_models: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -S`` gets this process's sys.path; an installation that needs ``site``
    (a .pth hook) must not turn every model into a refusal."""
    from edge_agent.probe import process

    real = process._child_env

    def without_site_packages(*, fast: bool) -> dict[str, str]:
        env = real(fast=fast)
        if fast:
            env["PYTHONPATH"] = process._root()  # numpy and LiteRT not importable
        return env

    monkeypatch.setattr(process, "_child_env", without_site_packages)
    running = process.ProbeProcess(tiny_models["int8"], what="m")
    result = running.result()
    assert result.ok, result.error
    assert running.mode == "exec-site"


def test_a_passed_test_load_is_cached_and_a_failed_one_is_not(
    tiny_models: dict[str, bytes], tmp_path: Path
) -> None:
    cache = ProbeCache(tmp_path / "probe-cache")
    first = Prober(cache=cache)
    assert first.probe(tiny_models["int8"], what="good").ok
    crash = _crashing_mutation(tiny_models["float32"])
    assert not first.probe(crash, what="crash").ok
    assert first.children == 2

    restarted = Prober(cache=cache)
    cached = restarted.probe(tiny_models["int8"], what="good")
    assert cached.ok and cached.cached
    assert cached.details["input"]["dtype"] == "int8"
    assert restarted.children == 0
    again = restarted.probe(crash, what="crash")  # failures are probed every time
    assert not again.ok and "LiteRT crashed" in again.error
    assert restarted.probe(tiny_models["int8"], what="good", num_threads=2).ok
    assert restarted.children == 2


def test_a_restarted_store_skips_the_test_load_of_the_same_model_only(
    make: Any, store_factory: Any, tmp_path: Path
) -> None:
    folder = make("1", where=tmp_path / "served")
    first = store_factory(BundleDirSource(folder))
    assert first.load_initial(30).version == "1"
    assert first.prober.children == 1
    first.close()
    second = store_factory(BundleDirSource(folder))  # the same state dir
    assert second.load_initial(30).version == "1"
    assert second.prober.children == 0
    make("2", where=folder, variant="float32")  # other bytes: tested again
    assert poll_until(second, "2").version == "2"
    assert second.prober.children == 1


def test_the_agent_refuses_a_crashing_bundle_before_serving_it(
    make: Any, tiny_models: dict[str, bytes], keys: dict[str, Any], tmp_path: Path
) -> None:
    """``edgeinfer agent`` test-loads its --bundle in a forked child while it starts: the
    model that segfaults LiteRT is refused with the reason, and the agent exits (code 2)
    without ever loading it (no broker needed: it never gets that far)."""
    folder = make("1", model=_crashing_mutation(tiny_models["float32"]), variant="float32")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "agent",
            "--bundle",
            str(folder),
            "--bootstrap-servers",
            "127.0.0.1:9",
            "--metrics-port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--public-key",
            str(keys["public_path"]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "was refused: LiteRT crashed (signal 11, SIGSEGV)" in proc.stderr
    assert "model loaded name=" not in proc.stderr
    assert not list((tmp_path / "state").glob("probe-cache/*.json"))


def test_an_agent_restarted_on_the_same_bundle_skips_its_test_load(
    make: Any, agent_process: Any, unique_topic: Callable[[str], str], tmp_path: Path
) -> None:
    folder = make("1")
    args = ["--bundle", str(folder), "--input", unique_topic("images"), "--state-dir"]
    args += [str(tmp_path / "state"), "--group", unique_topic("group")]
    first = agent_process(*args)
    assert first.terminate() == 0
    assert "test load skipped" not in first.log()
    assert len(list((tmp_path / "state").glob("probe-cache/*.json"))) == 1
    second = agent_process(*args)
    assert second.terminate() == 0
    assert "test load skipped: this model passed it before" in second.log()


def test_bundle_dir_refused_at_start_fails_fast(make: Any, store_factory: Any) -> None:
    folder = make("1", signed=False)
    store = store_factory(BundleDirSource(folder))
    started = time.monotonic()
    with pytest.raises(ModelRefusedError, match="unsigned and a public key is configured"):
        store.load_initial(timeout_s=60)
    assert time.monotonic() - started < 30


def test_bundle_dir_rewritten_in_place_is_a_new_version(
    make: Any, store_factory: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "served"
    make("1", where=folder)
    store = store_factory(BundleDirSource(folder))
    assert store.load_initial(30).version == "1"
    make("2", where=folder)
    assert poll_until(store, "2").version == "2"


def test_empty_registry_times_out_with_a_clear_message(
    registry: Registry, store_factory: Any
) -> None:
    store = store_factory(RegistrySource(registry.root, NAME))
    with pytest.raises(NoModelError, match="no usable model from registry .* versions seen: none"):
        store.load_initial(timeout_s=0.5)


def test_waiting_for_a_model_ends_when_the_agent_stops(
    registry: Registry, store_factory: Any
) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(NoModelError, match="stopped while waiting for a model"):
        store_factory(RegistrySource(registry.root, NAME)).load_initial(60, stop=stop)
    assert time.monotonic() - started < 10


def test_a_model_of_another_task_is_refused(
    make: Any, registry: Registry, store_factory: Any, metrics: AgentMetrics
) -> None:
    store, v1 = _start_on_v1(make, registry, store_factory)
    registry.publish(make("2", task="sequence-classification"))
    _refused_once(store, metrics, "2", "restart the agent to change the task")


# ------------------------------------------------------------------ models topic


def test_models_topic_source_follows_announcements_inline_and_by_uri(
    make: Any,
    registry: Registry,
    kafka_settings: KafkaSettings,
    unique_topic: Callable[[str], str],
    store_factory: Any,
    metrics: AgentMetrics,
    tmp_path: Path,
) -> None:
    topic = unique_topic("models")
    ensure_topics(kafka_settings, [topic], partitions=1)
    v1 = registry.publish(make("1"))
    ann = announce(kafka_settings, v1, topic=topic)
    assert ann.model_b64 is not None  # inline
    producer = make_producer(kafka_settings)
    producer.send(topic, key=NAME.encode(), value=b"not json").get(timeout=30)
    producer.send(topic, key=b"other-model", value=b"{}").get(timeout=30)

    cache = tmp_path / "state" / "models-cache"
    source = ModelsTopicSource(kafka_settings, topic, NAME, cache)
    store = store_factory(source)
    assert store.load_initial(timeout_s=60).version == "1"
    assert source.rejected == 1  # the malformed announcement, logged and skipped

    v2 = registry.publish(make("2"))
    ann2 = announce(kafka_settings, v2, topic=topic, inline_limit=100)
    assert ann2.uri is not None and ann2.model_b64 is None  # by reference
    model = poll_until(store, "2")
    serves(model)
    assert model.path == cache / "2"

    registry.publish(make("3"))
    announce(kafka_settings, registry.bundle_path(NAME, "3"), topic=topic)
    poll_until(store, "3")
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == ["2", "3"]
    assert swaps(metrics, "ok") == 2

    # a tampered announcement (signed manifest, other model bytes) is refused
    bad = make("4")
    (bad / MODEL_FILE).write_bytes(b"TFL3 not a model")
    data = json.loads((bad / MANIFEST_FILE).read_text())
    from stream.bundle import sha256_hex

    data["model_sha256"] = sha256_hex(b"TFL3 not a model")
    data["model_size"] = len(b"TFL3 not a model")
    (bad / MANIFEST_FILE).write_text(json.dumps(data))
    announce(kafka_settings, bad, topic=topic)
    deadline = time.monotonic() + 60
    while source.rejected < 2:  # refused on arrival: its manifest's signature is checked
        assert store.poll(block=True) is None
        assert time.monotonic() < deadline, "announcement of 4 not seen"
        time.sleep(0.1)
    assert "4" not in source.versions()
    assert store.current().version == "3"

    # a restart without a broker starts from the cached bundles
    store.close()
    offline = KafkaSettings(bootstrap_servers="127.0.0.1:9", client_id="offline")
    restarted = store_factory(ModelsTopicSource(offline, topic, NAME, cache, retry_s=0.2))
    assert restarted.load_initial(timeout_s=2.0).version == "3"

"""Training on several machines: ``--cluster``/``--worker-index`` or ``TF_CONFIG``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cluster import Cluster, parse_cluster
from trainer.exceptions import TrainerConfigError


def test_cluster_flags_parse() -> None:
    assert parse_cluster(None, None) is None
    cluster = parse_cluster("trainer-0.trainer:2222, trainer-1.trainer:2222", 1)
    assert cluster == Cluster(("trainer-0.trainer:2222", "trainer-1.trainer:2222"), 1)
    assert not cluster.is_chief and Cluster(("a:1",), 0).is_chief


@pytest.mark.parametrize(
    ("text", "index", "message"),
    [
        (None, 1, "--worker-index needs --cluster"),
        ("a:1,b:2", None, "--worker-index must be this worker's position in --cluster, 0..1"),
        ("a:1,b:2", 2, "0..1, got 2"),
        ("a:1,b", 0, "'b' is not host:port"),
        ("a:1,b:99999", 0, "'b:99999' is not host:port"),
        ("a:1,a:1", 0, "lists a worker twice"),
    ],
)
def test_bad_cluster_flags_name_the_fix(text: str | None, index: int | None, message: str) -> None:
    with pytest.raises(TrainerConfigError, match=message):
        parse_cluster(text, index)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


TRAIN = ["--dataset", "digits", "--arch", "cnn", "--epochs", "8", "--patience", "100"]


def edgeinfer(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", "train", *TRAIN, "--variants", "float32", *args]


@pytest.mark.slow
def test_two_workers_on_loopback_train_as_well_as_one(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    # Worker 0 is told by the flags, worker 1 by TensorFlow's TF_CONFIG: both routes.
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 1}}
    procs = [
        subprocess.Popen(
            edgeinfer("--cluster", ",".join(workers), "--worker-index", "0", "--out",
                      str(tmp_path / "w0"), "--quiet"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
        subprocess.Popen(
            edgeinfer("--out", str(tmp_path / "w1"), "--quiet"),
            env={**env, "TF_CONFIG": json.dumps(tf_config)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "training on 2 workers (MultiWorkerMirroredStrategy, 2 replicas)" in outputs[0]
    assert "this is worker 1 (not the chief)" in outputs[1]
    assert not (tmp_path / "w1").exists()  # only the chief writes
    two = json.loads((tmp_path / "w0" / "report.json").read_text())
    run = json.loads((tmp_path / "w0" / "run.json").read_text())
    assert run["epochs_run"] == 8 and "2 workers" in run["device"]

    single = subprocess.run(
        edgeinfer("--out", str(tmp_path / "one"), "--quiet"),
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stdout + single.stderr
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    print(
        f"test accuracy: 2 workers {two['keras']['accuracy']:.4f}, 1 {one['keras']['accuracy']:.4f}"
    )
    assert two["keras"]["accuracy"] >= 0.93
    assert abs(two["keras"]["accuracy"] - one["keras"]["accuracy"]) <= 0.03
    assert two["variants"]["float32"]["publishable"]


def test_kubernetes_indexed_job_lists_every_worker_by_its_stable_name() -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "deploy/k8s/trainer-multiworker.example.yaml"
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}
    job, service = docs["Job"], docs["Service"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert (
        pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    )
    script = pod["containers"][0]["args"][0]
    listed = script.split("--cluster ", 1)[1].split()[0]
    cluster = parse_cluster(listed, 0)
    assert cluster is not None and len(cluster.workers) == spec["completions"]
    name = job["metadata"]["name"]
    assert cluster.workers == tuple(
        f"{name}-{i}.{service['metadata']['name']}:2222" for i in range(spec["completions"])
    )
    assert '--worker-index "${JOB_COMPLETION_INDEX}"' in script

"""pyopt optimizers under tf.distribute: MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy.

The training runs in subprocesses (``tests/integration_workers/train_distributed.py``):
logical devices must be configured before TensorFlow initialises them, and each
multi-worker worker is its own process. All three processes (one MirroredStrategy process,
two localhost workers on free loopback ports) start together once per module, are waited on
with a timeout and are killed if anything goes wrong.

Every run trains the same model on the same data, seed and global batch (16, 2 epochs = 8
steps) with pyopt's Adam (weight decay), SGD (Nesterov momentum), GradientDescent and
RMSprop (centered, with momentum: both optional slots, each placed by its variable), and is
compared with the single-device ``model.fit`` run of the same optimizer.

Tolerance: rtol=atol=1e-5 (float32). The distributed gradient is the sum of two half-batch
gradients, the single-device one a full-batch gradient, so they differ by float32 rounding
of the summation order (observed: <= 6e-8 after 8 steps). A gradient all-reduced twice (SUM)
or not at all would be off by the size of a step (~1e-2).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backends import fused_unavailable_reason

WORKER = Path(__file__).parent / "integration_workers" / "train_distributed.py"
OPTIMIZERS = ["adam", "nesterov", "gradient_descent", "rmsprop"]
TOL = 1e-5
TIMEOUT_S = 420  # per process group, on a busy 2-core machine (typically ~1-2 minutes)
STEPS = 8  # 64 samples / global batch 16 * 2 epochs
# The workers inherit this environment: where the fused ops cannot run (PYOPT_BACKEND=tf, no
# op library), backend="auto" runs the pure-TF maths and everything else must still hold.
EXPECTED_BACKEND = "tf" if fused_unavailable_reason() else "fused"


def free_ports(n: int) -> list:
    """``n`` distinct free loopback ports (held open together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(mode: str, out: Path, log: Path, tf_config: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(out)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


class Run:
    """One finished worker process: its exit code, log tail, arrays and report."""

    def __init__(self, name: str, proc: subprocess.Popen, out: Path, log: Path, timed_out: bool):
        self.name, self.returncode, self.timed_out = name, proc.returncode, timed_out
        self.log = log.read_text(errors="replace")[-6000:]
        self.arrays = dict(np.load(out)) if out.exists() else {}
        self.report = json.loads(str(self.arrays.pop("report"))) if "report" in self.arrays else {}

    def check(self):
        assert not self.timed_out, f"{self.name} timed out after {TIMEOUT_S}s; log tail:\n{self.log}"
        assert self.returncode == 0 and self.report, f"{self.name} exited {self.returncode}; log tail:\n{self.log}"

    def weights(self, run: str, optimizer: str, replica: int | None = None) -> list:
        prefix = f"{run}/{optimizer}/" + ("" if replica is None else f"replica{replica}/")
        n = sum(1 for k in self.arrays if k.startswith(prefix) and k[len(prefix) :].startswith("w"))
        assert n, f"no weights for {prefix} in {self.name}: {self.report.get(f'{run}/{optimizer}')}"
        return [self.arrays[f"{prefix}w{i}"] for i in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Starts the MirroredStrategy process and the two workers together; waits; kills leftovers."""
    tmp = tmp_path_factory.mktemp("distribute")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    jobs = {"mirrored": dict(mode="mirrored")}
    jobs.update(
        {
            f"worker{i}": dict(
                mode="multiworker", tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}}
            )
            for i in range(2)
        }
    )
    procs = {}
    try:
        for name, job in jobs.items():
            procs[name] = start(job["mode"], tmp / f"{name}.npz", tmp / f"{name}.log", job.get("tf_config"))
        timed_out = {}
        for name, proc in procs.items():
            try:
                proc.wait(timeout=TIMEOUT_S)
                timed_out[name] = False
            except subprocess.TimeoutExpired:
                timed_out[name] = True
                for other in procs.values():  # a stuck worker blocks its peer: stop the group
                    other.kill()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return {
        name: Run(name, proc, tmp / f"{name}.npz", tmp / f"{name}.log", timed_out[name]) for name, proc in procs.items()
    }


def assert_close(actual, expected, tol, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"{what} w{i}")


def assert_trained_distributed(report: dict, what: str, replicas: int):
    assert "error" not in report, f"{what}: {report.get('error')}"
    assert report["num_replicas"] == replicas, what
    assert report["iterations"] == STEPS, what
    assert report["last_backend"] == EXPECTED_BACKEND, f"{what}: the per-variable update_step ran {report}"
    # Gradients all-reduced once: the only all_reduce in a traced step is the optimizer's, one
    # call per replica for all 4 gradients.
    assert report["optimizer_applies_traced"] >= 1, what
    assert report["all_reduce_calls_traced"] == report["optimizer_applies_traced"], what
    assert report["all_reduced_tensors_traced"] == 4 * report["all_reduce_calls_traced"], what
    # Slots live where their variables live (Keras names a slot "<optimizer>/<variable path
    # with "/" -> "_">_<slot name>").
    variables = report["variable_devices"]
    for slot, devices in report["slot_devices"].items():
        owners = [v for v in variables if slot.split("/", 1)[1].startswith(v.replace("/", "_") + "_")]
        assert len(owners) == 1, f"{what}: slot {slot} matches variables {owners}"
        owner = owners[0]
        assert devices == variables[owner], f"{what}: slot {slot} on {devices}, its variable on {variables[owner]}"


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_mirrored_strategy_fit_equals_single_device(runs, optimizer):
    run = runs["mirrored"]
    run.check()
    report = run.report[f"mirrored_fit/{optimizer}"]
    assert_trained_distributed(report, f"mirrored {optimizer}", replicas=2)
    assert (
        len({d[0] for d in report["variable_devices"].values()} | {d[1] for d in report["variable_devices"].values()})
        == 2
    )
    want = run.weights("single", optimizer)
    assert run.report[f"single/{optimizer}"]["last_backend"] == EXPECTED_BACKEND
    assert_close(run.weights("mirrored_fit", optimizer), want, TOL, f"mirrored {optimizer} vs single device")
    # Both replicas hold identical copies.
    assert_close(
        run.weights("mirrored_fit", optimizer, replica=1),
        run.weights("mirrored_fit", optimizer, replica=0),
        0.0,
        f"mirrored {optimizer} replica 1 vs replica 0",
    )


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_multi_worker_custom_loop_equals_single_device(runs, optimizer):
    for name in ("worker0", "worker1"):
        run = runs[name]
        run.check()
        assert_trained_distributed(run.report[f"multiworker_loop/{optimizer}"], f"{name} {optimizer}", replicas=2)
        want = run.weights("single", optimizer)
        assert_close(run.weights("multiworker_loop", optimizer), want, TOL, f"{name} {optimizer} vs single device")
    # Both workers end with identical weights.
    assert_close(
        runs["worker1"].weights("multiworker_loop", optimizer),
        runs["worker0"].weights("multiworker_loop", optimizer),
        0.0,
        f"{optimizer} worker 1 vs worker 0",
    )


KERAS_MWMS_FIT_BUG = "unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor"


@pytest.mark.slow
def test_multi_worker_model_fit(runs):
    # Keras 3.15's TF trainer calls strategy.reduce("MEAN", (x, y)) on the first distributed
    # batch (_maybe_symbolic_build); with 2 workers MultiWorkerMirroredStrategy cannot reduce a
    # tuple and model.fit fails before its first step, whatever the optimizer (a Keras bug, not
    # pyopt's). Until Keras fixes it, multi-worker training uses a custom loop (see above).
    for name in ("worker0", "worker1"):
        runs[name].check()
        report = runs[name].report["multiworker_fit/adam"]
        if KERAS_MWMS_FIT_BUG in report.get("error", ""):
            pytest.xfail(
                "Keras 3 model.fit under 2-worker MultiWorkerMirroredStrategy: strategy.reduce of a "
                "(x, y) tuple in _maybe_symbolic_build fails before any optimizer step"
            )
        for optimizer in OPTIMIZERS:
            report = runs[name].report[f"multiworker_fit/{optimizer}"]
            assert_trained_distributed(report, f"{name} fit {optimizer}", replicas=2)
            assert_close(
                runs[name].weights("multiworker_fit", optimizer),
                runs[name].weights("single", optimizer),
                TOL,
                f"{name} fit {optimizer} vs single device",
            )

"""The benchmark report (pyopt.bench_report) on a small synthetic pytest-benchmark JSON:
per-step times, speedups, probe fractions, clip overheads, the headline table and PASS/FAIL
of the targets are computed here by hand from the same medians and compared with what the
report says; the trimmed medians file rebuilds the same report; the suites are found in the
installed package and run from an empty directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pyopt
from pyopt import bench_report

M16 = 1 << 24


def _bench(impl, rule, workload, median, *, kind="dense", clip=None, n=M16, steps_per_call=1, n_tensors=1, train=False):
    bytes_per = {"gd": 12, "momentum": 20, "adam": 28, "adagrad": 20, "lion": 20, "probe": 12}[rule]
    return {
        "name": f"{rule}-{workload}-{impl}",
        "stats": {"median": median, "iqr": median / 10, "rounds": 5},
        "extra_info": dict(
            impl=impl,
            label=impl,
            rule=rule,
            clip=clip,
            workload=workload,
            kind=kind,
            dtype="float32",
            n_tensors=n_tensors,
            n_elements=n,
            bytes_per_step=bytes_per * n,
            first_step_s=0.1,
            check_rel_err=0.0,
            train=train,
            note=None,
            steps_per_call=steps_per_call,
            page_faults_per_step=0,
        ),
    }


# Medians in seconds, per timed call.
ADAM_16M = {"pyopt_op": 0.020, "pyopt_keras": 0.022, "keras": 0.120, "tf_raw": 0.032, "torch": 0.021}
PROBE_16M = 0.006  # 12 bytes per element: 33.6 GB/s
PROBE_1M = 0.0001  # 126 GB/s (in cache): never the probe of a bigger step
CLIPNORM_ADAM_16M = {"pyopt_op": 0.023, "pyopt_keras": 0.030}
MANY = {"pyopt_op": 0.006, "keras": 0.018, "tf_call_floor": 0.004}  # 200 x 10K, one step per call
MANY_NUMPY_10 = 0.012  # 10 NumPy-kernel steps: 46.7 GB/s, faster than the probe (the step partly in cache)
MANY_10 = {"pyopt_op": 0.040, "keras": 0.150, "tf_call_floor": 0.010}  # 10 steps per call


def _json(tmp_path):
    benches = [_bench(i, "adam", "dense_16M", t) for i, t in ADAM_16M.items()]
    benches.append(_bench("triad", "probe", "probe_16M", PROBE_16M, kind="probe"))
    benches.append(_bench("triad", "probe", "probe_1M", PROBE_1M, kind="probe", n=1 << 20))
    benches += [_bench(i, "adam", "dense_16M", t, clip="clipnorm") for i, t in CLIPNORM_ADAM_16M.items()]
    benches += [_bench(i, "adam", "many_200x10K", t, kind="many", n=2_000_000, n_tensors=200) for i, t in MANY.items()]
    benches += [
        _bench(i, "adam", "many_200x10K_10_per_call", t, kind="many", n=2_000_000, n_tensors=200, steps_per_call=10)
        for i, t in {**MANY_10, "pyopt_numpy": MANY_NUMPY_10}.items()
    ]
    benches.append(_bench("pyopt_op", "adam", "dense_64M", 0.08, n=M16 * 4))  # above every probe
    path = tmp_path / "bench.json"
    path.write_text(
        json.dumps(
            {
                "benchmarks": benches,
                "machine_info": {"pyopt": {"cpu": "test CPU", "cores": 2}},
                "datetime": "2026-12-01T00:00:00",
                "commit_info": {"id": "abc"},
            }
        )
    )
    return path


def _target(targets, impl, text, exact=False):
    found = [t for t in targets if t["impl"] == impl and (t["target"] == text if exact else text in t["target"])]
    assert len(found) == 1, (impl, text, [t["target"] for t in found])
    return found[0]


def test_rows_are_per_step_with_speedups_and_probe_fraction(tmp_path):
    rows, machine = bench_report.load(_json(tmp_path))
    op = bench_report._find(rows, "pyopt_op", "adam", "dense_16M")
    assert op["median_s"] == ADAM_16M["pyopt_op"]
    assert op["x_keras"] == pytest.approx(ADAM_16M["keras"] / ADAM_16M["pyopt_op"])
    assert op["x_tf_raw"] == pytest.approx(ADAM_16M["tf_raw"] / ADAM_16M["pyopt_op"])
    assert op["gbps"] == pytest.approx(28 * M16 / ADAM_16M["pyopt_op"] / 1e9)
    assert op["probe_fraction"] == pytest.approx(op["gbps"] / (12 * M16 / PROBE_16M / 1e9))
    looped = bench_report._find(rows, "pyopt_op", "adam", "many_200x10K_10_per_call")
    assert looped["median_s"] == pytest.approx(MANY_10["pyopt_op"] / 10)  # per step, not per call
    clipped = bench_report._find(rows, "pyopt_keras", "adam", "dense_16M", clip="clipnorm")
    assert clipped["clip_overhead"] == pytest.approx(CLIPNORM_ADAM_16M["pyopt_keras"] / ADAM_16M["pyopt_keras"])
    assert machine["pyopt"]["cpu"] == "test CPU"


def test_targets_pass_and_fail_on_the_measured_ratios(tmp_path):
    rows, _ = bench_report.load(_json(tmp_path))
    targets = bench_report.evaluate_targets(rows)
    keras = _target(targets, "pyopt_op", "dense Adam 16M vs Keras built-in")
    assert keras["measured"] == pytest.approx(6.0) and keras["passed"] is True
    raw = _target(targets, "pyopt_op", "dense Adam 16M vs ResourceApplyAdam")
    assert raw["measured"] == pytest.approx(1.6) and raw["passed"] is True
    torch = _target(targets, "pyopt_keras", "dense Adam 16M vs torch fused Adam")
    assert torch["measured"] == pytest.approx(21 / 22) and torch["passed"] is False
    many = _target(targets, "pyopt_op", "Adam 200 x 10K tensors vs Keras built-in", exact=True)
    assert many["measured"] == pytest.approx(3.0) and many["passed"] is False
    many_10 = _target(targets, "pyopt_op", "Adam 200 x 10K tensors vs Keras built-in, 10 steps per call", exact=True)
    assert many_10["measured"] == pytest.approx(3.75) and many_10["passed"] is True
    floor = _target(targets, "tf_call_floor", "Adam 200 x 10K tensors: Keras built-in time / call floor")
    assert floor["measured"] == pytest.approx(4.5) and floor["passed"] is True
    loop_floor = _target(targets, "tf_call_floor", "10 steps per call: Keras built-in time / loop floor")
    assert loop_floor["measured"] == pytest.approx(15.0)
    clip_op = _target(targets, "pyopt_op", "clipnorm Adam dense_16M vs unclipped")
    assert clip_op["measured"] == pytest.approx(1.15) and clip_op["passed"] is True
    assert "1.14x, 32 vs 28 bytes/element" in clip_op["target"]  # the bytes ratio beyond the caches
    clip_keras = _target(targets, "pyopt_keras", "clipnorm Adam dense_16M vs unclipped")
    assert clip_keras["passed"] is False
    unmeasured = _target(targets, "pyopt_op", "dense gradient descent 16M vs Keras built-in")
    assert unmeasured["measured"] is None and unmeasured["passed"] is None


def test_from_json_writes_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_report.main(["--from-json", str(_json(tmp_path)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FAIL  Adam 200 x 10K tensors vs Keras built-in [pyopt_op]: 3.00x (needed >= 3.5x)" in printed
    assert printed.startswith("| case | pyopt Keras |")  # the headline first
    results = (out / "results.md").read_text()
    assert "| dense Adam 16M vs Keras built-in | pyopt_op | 6.00x | >= 5x | PASS |" in results
    summary = (out / "summary.md").read_text()
    assert "| dense Adam 16M vs Keras built-in | pyopt_op | 6.00x | >= 5x | PASS |" in summary
    assert "\n- CPU: test CPU, 2 cores\n" in summary  # a run that did not record them: nothing appended
    raw = json.loads(_json(tmp_path).read_text())  # a run that recorded the CPU's signature and cache
    raw["machine_info"]["pyopt"].update(cpu_signature="family 25, model 17, stepping 1", last_level_cache="L3 32768K")
    assert "- CPU: test CPU, 2 cores, family 25, model 17, stepping 1, L3 32768K" in bench_report.machine_lines(
        dict(raw["machine_info"])
    )
    # What a user asks comes first: the headline, then the machine and the cases; the targets last.
    for text in (summary, results):
        order = [text.index(h) for h in ("## Headline", "## Machine", "## Targets")]
        assert order == sorted(order) and text.count("## Targets") == 1
        assert text.index("### float32, 16M elements" if text is summary else "## All cases") < order[2]
    assert not (out / "README_section.md").exists()
    assert sorted(p.name for p in out.iterdir()) == ["medians.json", "results.md", "summary.md", "throughput.png"]


def test_floor_and_bytes_estimate_uses_the_best_bandwidth_seen(tmp_path):
    rows, _ = bench_report.load(_json(tmp_path))
    many = bench_report._find(rows, "pyopt_op", "adam", "many_200x10K")
    probe_16m = 12 * M16 / PROBE_16M  # bytes/s; 2M elements lie between the 1M and 16M probes
    assert many["probe_gbps"] == pytest.approx(probe_16m / 1e9)
    big = bench_report._find(rows, "pyopt_op", "adam", "dense_64M")
    assert big["probe_gbps"] == pytest.approx(probe_16m / 1e9)  # above every probe: the largest
    targets = bench_report.evaluate_targets(rows)
    # The NumPy kernels (at 10 steps per call) moved the step's bytes faster than the probe:
    # that bandwidth counts for the step at any steps per call (per step: 1.2 ms, where the
    # probe's would be 1.67 ms).
    numpy_step_s = MANY_NUMPY_10 / 10
    assert numpy_step_s < 28 * 2_000_000 / probe_16m
    one = _target(targets, "tf_call_floor", "Adam 200 x 10K tensors: Keras built-in time / (call floor + the step's")
    assert one["measured"] == pytest.approx(MANY["keras"] / (MANY["tf_call_floor"] + numpy_step_s))
    assert one["passed"] is False  # 3.46x
    ten = _target(targets, "tf_call_floor", "10 steps per call: Keras built-in time / (loop floor + the step's")
    assert ten["measured"] == pytest.approx((MANY_10["keras"] / 10) / (MANY_10["tf_call_floor"] / 10 + numpy_step_s))
    assert ten["passed"] is True  # 6.82x


def test_dense_bandwidth_bound_is_the_reference_time_over_the_bytes_at_the_best_bandwidth(tmp_path):
    rows, _ = bench_report.load(_json(tmp_path))
    targets = bench_report.evaluate_targets(rows)
    # No implementation beat the 16M probe (33.6 GB/s), so the step's 28 bytes per element
    # take 14 ms at best: Keras (120 ms) can be beaten by 8.57x at most, TF's op (32 ms) by 2.29x.
    best_step_s = 28 * M16 / (12 * M16 / PROBE_16M)
    keras = _target(targets, bench_report.BOUND, "dense Adam 16M: Keras built-in time / (the step's bytes")
    assert keras["measured"] == pytest.approx(ADAM_16M["keras"] / best_step_s) and keras["passed"] is True
    raw = _target(targets, bench_report.BOUND, "dense Adam 16M: ResourceApplyAdam time / (the step's bytes")
    assert raw["measured"] == pytest.approx(ADAM_16M["tf_raw"] / best_step_s) and raw["passed"] is True
    # Gradient descent was not measured: its bound rows say so instead of passing or failing.
    gd = _target(targets, bench_report.BOUND, "dense gradient descent 16M: Keras built-in time / (the step's")
    assert gd["measured"] is None and gd["passed"] is None


def test_dense_bandwidth_bound_fails_when_the_reference_is_already_near_the_probe(tmp_path):
    path = _json(tmp_path)
    raw = json.loads(path.read_text())
    for b in raw["benchmarks"]:  # TF's op at 0.018 s: 26.1 GB/s of the probe's 33.6
        if b["extra_info"]["impl"] == "tf_raw":
            b["stats"]["median"] = 0.018
    path.write_text(json.dumps(raw))
    rows, _ = bench_report.load(path)
    bound = _target(
        bench_report.evaluate_targets(rows),
        bench_report.BOUND,
        "dense Adam 16M: ResourceApplyAdam time / (the step's bytes",
    )
    assert bound["measured"] == pytest.approx(0.018 / (28 * M16 / (12 * M16 / PROBE_16M)))
    assert bound["passed"] is False  # 1.29x: 1.5x is out of reach for any implementation in this run
    table = bench_report.targets_table(bench_report.evaluate_targets(rows))
    assert f"| {bound['target']} | bandwidth bound | 1.29x | >= 1.5x | **out of reach** |" in table
    keras_bound = _target(
        bench_report.evaluate_targets(rows),
        bench_report.BOUND,
        "dense Adam 16M: Keras built-in time / (the step's bytes",
    )
    assert f"| {keras_bound['target']} | bandwidth bound | 8.57x | >= 5x | within reach |" in table


def _headline_json(tmp_path):
    """The synthetic run plus the NumPy kernels and torch's train step (so every speedup pair
    has both sides somewhere) and two train steps."""
    path = _json(tmp_path)
    raw = json.loads(path.read_text())
    many = dict(kind="many", n=2_000_000, n_tensors=200)
    raw["benchmarks"] += [
        _bench("pyopt_numpy", "adam", "dense_16M", 0.019),
        _bench("pyopt_numpy", "adam", "many_200x10K", 0.0015, **many),
        _bench("torch", "adam", "many_200x10K", 0.005, **many),
    ]
    raw["benchmarks"] += [
        _bench(i, "adam", "train_mlp_13_4_1", t, kind="train", n=61, n_tensors=4, train=True)
        for i, t in TRAIN_MLP.items()
    ]
    path.write_text(json.dumps(raw))
    return path


TRAIN_MLP = {
    "pyopt_keras": 0.0004,
    "pyopt_op": 0.0005,
    "keras": 0.0008,
    "keras_xla": 0.0006,
    "tf_raw": 0.0005,
    "torch": 0.0007,
}


def test_headline_rows_and_speedups(tmp_path):
    rows, _ = bench_report.load(_headline_json(tmp_path))
    found = {h["case"]: h for h in bench_report.headline_rows(rows)}
    # Only the cases this run measured, in the headline's order.
    assert list(found) == [
        "Adam, float32 16M (one tensor)",
        "Adam + clipnorm, float32 16M",
        "Adam, 200 tensors x 10K",
        "Adam, 200 x 10K, 10 steps per call",
        "Adam, MLP 13-4-1 train step",
    ]
    dense = found["Adam, float32 16M (one tensor)"]
    assert sorted(dense["cells"]) == sorted(["pyopt_op", "pyopt_keras", "pyopt_numpy", "keras", "tf_raw", "torch"])
    assert dense["speedups"] == {
        ("pyopt_keras", "keras"): pytest.approx(0.120 / 0.022),
        ("pyopt_op", "tf_raw"): pytest.approx(0.032 / 0.020),
        ("pyopt_numpy", "torch"): pytest.approx(0.021 / 0.019),
    }
    many = found["Adam, 200 tensors x 10K"]  # no pyopt Keras, no TF op: only NumPy vs torch
    assert many["speedups"] == {("pyopt_numpy", "torch"): pytest.approx(0.005 / 0.0015)}
    assert "tf_call_floor" not in many["cells"]  # the floor is not an implementation a user picks
    looped = found["Adam, 200 x 10K, 10 steps per call"]
    assert looped["cells"]["pyopt_op"]["median_s"] == pytest.approx(MANY_10["pyopt_op"] / 10)
    assert found["Adam + clipnorm, float32 16M"]["speedups"] == {}  # no reference measured with clipnorm
    train = found["Adam, MLP 13-4-1 train step"]
    assert train["speedups"] == {
        ("pyopt_keras", "keras"): pytest.approx(0.0008 / 0.0004),
        ("pyopt_op", "tf_raw"): pytest.approx(0.0005 / 0.0005),
    }
    assert train["gbps"] is False and dense["gbps"] is True

    table = bench_report.headline_table(rows).splitlines()
    assert table[0] == (
        "| case | pyopt Keras | pyopt op | pyopt NumPy | Keras | Keras XLA | TF op | torch | "
        "pyopt Keras vs Keras | pyopt op vs TF op | pyopt NumPy vs torch |"
    )
    gbps = {impl: 28 * M16 / t / 1e9 for impl, t in {**ADAM_16M, "pyopt_numpy": 0.019}.items()}  # op: 23.5
    cells = [
        f"{ms} ({gbps[impl]:.{digits}f})"
        for ms, impl, digits in (
            ("22.0", "pyopt_keras", 1),
            ("20.0", "pyopt_op", 1),
            ("19.0", "pyopt_numpy", 1),
            ("120", "keras", 2),
        )
    ]
    cells += ["", f"32.0 ({gbps['tf_raw']:.1f})", f"21.0 ({gbps['torch']:.1f})", "5.45x", "1.60x", "1.11x"]
    assert table[2] == "| " + " | ".join(["Adam, float32 16M (one tensor)", *cells]) + " |"
    train_cells = ["0.400", "0.500", "", "0.800", "0.600", "0.500", "0.700", "2.00x", "1.00x", ""]
    assert table[-1] == "| " + " | ".join(["Adam, MLP 13-4-1 train step", *train_cells]) + " |"


def test_medians_file_rebuilds_the_same_report(tmp_path, capsys):
    raw_path = _headline_json(tmp_path)
    raw = json.loads(raw_path.read_text())  # pytest-benchmark records far more of the machine than the report reads
    raw["machine_info"].update(cpu={"brand_raw": "test CPU", "flags": ["avx2"] * 100}, node="vm", quick=True)
    raw_path.write_text(json.dumps(raw))
    from_raw, from_medians = tmp_path / "from_raw", tmp_path / "from_medians"
    assert bench_report.main(["--from-json", str(raw_path), "--out", str(from_raw)]) == 0
    medians = from_raw / "medians.json"
    assert bench_report.main(["--from-json", str(medians), "--out", str(from_medians)]) == 0
    for name in ("summary.md", "results.md", "medians.json"):
        assert (from_raw / name).read_text() == (from_medians / name).read_text(), name
    trimmed = json.loads(medians.read_text())
    assert trimmed["format"] == bench_report.MEDIANS_FORMAT and len(trimmed["cases"]) == len(raw["benchmarks"])
    assert trimmed["machine"]["cpu"] == {"brand_raw": "test CPU"} and "node" not in trimmed["machine"]
    assert trimmed["machine"]["commit"] == {"id": "abc"}
    op = dict(zip(trimmed["columns"], next(c for c in trimmed["cases"] if c[:2] == ["pyopt_op", "pyopt_op"])))
    assert op["median_s"] == ADAM_16M["pyopt_op"] and op["gbps"] == pytest.approx(28 * M16 / 0.020 / 1e9)
    assert medians.stat().st_size < raw_path.stat().st_size / 2
    capsys.readouterr()
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"rows": []}))
    assert bench_report.main(["--from-json", str(bogus), "--out", str(tmp_path / "x")]) == 2
    assert "neither pytest-benchmark's JSON" in capsys.readouterr().err


def test_the_suites_are_found_in_the_installed_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty directory: nothing to find here
    suites = bench_report.suites_dir()
    assert suites == Path(pyopt.__file__).resolve().parent / "benchmarks"
    assert bench_report.cannot_run() == ""
    cmd = bench_report.suite_command(suites, tmp_path / "bench.json", True, ["keras"], ["-k", "adam"])
    assert cmd[:4] == [sys.executable, "-m", "pytest", str(suites)]
    assert cmd[cmd.index("-c") + 1] == str(suites / "pytest.ini") and cmd[cmd.index("--rootdir") + 1] == str(suites)
    assert cmd[-4:] == ["--quick", "--impl=keras", "-k", "adam"]


def test_nothing_imports_pytest_with_pyopt():
    code = (
        "import sys, pyopt, pyopt.bench_report, pyopt.benchmarks, pyopt.benchmarks.paired, "
        "pyopt.benchmarks.dispatch_gap; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pytest'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_pyopt_bench_runs_from_an_empty_directory(tmp_path):
    """The console command from a directory outside the source tree: one probe case (seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "pyopt",
        "bench",
        "--out",
        "out",
        "--impl",
        "probe",
        "--",
        "-k",
        "probe_rmw_1t and dense_1K",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    assert {"bench.json", "medians.json", "summary.md", "results.md"} <= {p.name for p in out.iterdir()}
    cases = json.loads((out / "medians.json").read_text())["cases"]
    assert [c[0] for c in cases] == ["probe_rmw_1t"]
    assert "No headline case was measured in this run." in (out / "summary.md").read_text()
    assert not (bench_report.suites_dir() / ".pytest_cache").exists()


# Issue #20's rules at 16M (seconds per step): Adagrad has TF's op, Lion none.
ADAGRAD_16M = {"pyopt_op": 0.013, "pyopt_keras": 0.014, "pyopt_numpy": 0.0115, "keras": 0.100, "tf_raw": 0.018}
LION_16M = {"pyopt_op": 0.012, "keras": 0.050}
# The Embedding, 1M x 64: pyopt's dense and lazy steps, Keras, TF's sparse op.
EMBEDDING = {"pyopt_op": 0.090, "pyopt_op_lazy": 0.0004, "keras": 0.600, "tf_raw": 0.002}


def _new_rules_json(tmp_path):
    path = _json(tmp_path)
    raw = json.loads(path.read_text())
    raw["benchmarks"] += [_bench(i, "adagrad", "dense_16M", t) for i, t in ADAGRAD_16M.items()]
    raw["benchmarks"] += [_bench(i, "lion", "dense_16M", t) for i, t in LION_16M.items()]
    raw["benchmarks"] += [
        _bench(i, "adagrad", "embedding_1Mx64", t, kind="embedding", n=64 << 20) for i, t in EMBEDDING.items()
    ]
    path.write_text(json.dumps(raw))
    return path


def test_new_rule_targets_at_16m(tmp_path):
    rows, _ = bench_report.load(_new_rules_json(tmp_path))
    targets = bench_report.evaluate_targets(rows)
    keras = _target(targets, "pyopt_op", "dense Adagrad 16M vs Keras built-in", exact=True)
    assert keras["measured"] == pytest.approx(0.100 / 0.013) and keras["passed"] is True
    raw = _target(targets, "pyopt_op", "dense Adagrad 16M vs ResourceApplyAdagradV2", exact=True)
    assert raw["measured"] == pytest.approx(0.018 / 0.013) and raw["threshold"] == 1.3 and raw["passed"] is True
    assert _target(targets, "pyopt_keras", "dense Adagrad 16M vs ResourceApplyAdagradV2")["passed"] is False  # 1.29x
    probe_gbps = 12 * M16 / PROBE_16M / 1e9
    numpy_fraction = 20 * M16 / 0.0115 / 1e9 / probe_gbps  # 87%
    fraction = _target(targets, "pyopt_numpy", "dense Adagrad 16M, fraction of bandwidth probe")
    assert fraction["measured"] == pytest.approx(numpy_fraction) and fraction["passed"] is True
    assert _target(targets, "pyopt_op", "dense Adagrad 16M, fraction of bandwidth probe")["passed"] is False  # 77%
    # 20 bytes per element at the probe's 33.6 GB/s: 10 ms at best, so Keras can be beaten by 10x,
    # TF's op by 1.8x
    best_s = 20 * M16 / (probe_gbps * 1e9)
    bound = _target(targets, bench_report.BOUND, "dense Adagrad 16M: Keras built-in time / (the step's bytes")
    assert bound["measured"] == pytest.approx(0.100 / best_s)
    bound = _target(targets, bench_report.BOUND, "dense Adagrad 16M: ResourceApplyAdagradV2 time / (the step's")
    assert bound["measured"] == pytest.approx(0.018 / best_s) and bound["passed"] is True
    # Lion: no TF op, so no target against one; Keras's is met
    assert not [t for t in targets if "Lion" in t["target"] and "Resource" in t["target"]]
    lion = _target(targets, "pyopt_op", "dense Lion 16M vs Keras built-in", exact=True)
    assert lion["measured"] == pytest.approx(0.050 / 0.012)
    unmeasured = _target(targets, "pyopt_op", "dense Nadam 16M vs Keras built-in", exact=True)
    assert unmeasured["passed"] is None
    table = bench_report.headline_table(rows)
    assert "| Adagrad, float32 16M | 14.0 (24.0) | 13.0 (25.8) | 11.5 (29.2) | 100 (3.36) |" in table
    assert "| 7.14x | 1.38x |" in table  # pyopt Keras vs Keras, pyopt op vs TF op


def test_the_embedding_rows_have_speedups_but_no_bandwidth(tmp_path):
    rows, _ = bench_report.load(_new_rules_json(tmp_path))
    lazy = bench_report._find(rows, "pyopt_op_lazy", "adagrad", "embedding_1Mx64")
    assert lazy["x_keras"] == pytest.approx(0.600 / 0.0004) and lazy["x_tf_raw"] == pytest.approx(5.0)
    assert "probe_fraction" not in lazy
    out = tmp_path / "out"
    assert bench_report.main(["--from-json", str(_new_rules_json(tmp_path)), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "### Embedding 1M x 64, IndexedSlices gradients (dense and lazy steps)" in summary
    assert "| Adagrad, embedding_1Mx64 | pyopt_op_lazy | 0.400 |  |  | 1500 | 5.00 |" in summary
    lines = [line for line in summary.splitlines() if line.startswith("| Adagrad, ")]
    # the report's order: the rules in the table's order, then the implementations
    assert [line.split(" | ")[1] for line in lines if "dense_16M" in line] == [
        "pyopt_op",
        "pyopt_keras",
        "pyopt_numpy",
        "keras",
        "tf_raw",
    ]

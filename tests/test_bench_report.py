"""The benchmark report (pyopt.bench_report) on a small synthetic pytest-benchmark JSON:
per-step times, speedups, probe fractions, clip overheads and PASS/FAIL of the targets are
computed here by hand from the same medians and compared with what the report says."""

from __future__ import annotations

import json

import pytest

from pyopt import bench_report

M16 = 1 << 24


def _bench(impl, rule, workload, median, *, kind="dense", clip=None, n=M16, steps_per_call=1, n_tensors=1):
    bytes_per = {"gd": 12, "momentum": 20, "adam": 28, "probe": 12}[rule]
    return {
        "name": f"{rule}-{workload}-{impl}",
        "stats": {"median": median, "iqr": median / 10, "rounds": 5},
        "extra_info": dict(impl=impl, label=impl, rule=rule, clip=clip, workload=workload, kind=kind,
                           dtype="float32", n_tensors=n_tensors, n_elements=n, bytes_per_step=bytes_per * n,
                           first_step_s=0.1, check_rel_err=0.0, train=False, note=None,
                           steps_per_call=steps_per_call, page_faults_per_step=0),
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
    benches += [_bench(i, "adam", "many_200x10K_10_per_call", t, kind="many", n=2_000_000, n_tensors=200,
                       steps_per_call=10) for i, t in {**MANY_10, "pyopt_numpy": MANY_NUMPY_10}.items()]
    benches.append(_bench("pyopt_op", "adam", "dense_64M", 0.08, n=M16 * 4))  # above every probe
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": benches, "machine_info": {"pyopt": {"cpu": "test CPU", "cores": 2}},
                                "datetime": "2026-12-01T00:00:00", "commit_info": {"id": "abc"}}))
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
    results = (out / "results.md").read_text()
    assert "| dense Adam 16M vs Keras built-in | pyopt_op | 6.00x | >= 5x | PASS |" in results
    section = (out / "README_section.md").read_text()
    assert section.startswith("## Benchmarks") and "### Targets" in section and "test CPU, 2 cores" in section
    assert "\n- CPU: test CPU, 2 cores\n" in section  # a run that did not record them: nothing appended
    raw = json.loads(_json(tmp_path).read_text())  # a run that recorded the CPU's signature and cache
    raw["machine_info"]["pyopt"].update(cpu_signature="family 25, model 17, stepping 1", last_level_cache="L3 32768K")
    assert "- CPU: test CPU, 2 cores, family 25, model 17, stepping 1, L3 32768K" in bench_report.machine_lines(
        dict(raw["machine_info"]))
    assert (out / "summary.md").is_file()


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
    bound = _target(bench_report.evaluate_targets(rows), bench_report.BOUND,
                    "dense Adam 16M: ResourceApplyAdam time / (the step's bytes")
    assert bound["measured"] == pytest.approx(0.018 / (28 * M16 / (12 * M16 / PROBE_16M)))
    assert bound["passed"] is False  # 1.29x: 1.5x is out of reach for any implementation in this run
    table = bench_report.targets_table(bench_report.evaluate_targets(rows))
    assert f"| {bound['target']} | bandwidth bound | 1.29x | >= 1.5x | **out of reach** |" in table
    keras_bound = _target(bench_report.evaluate_targets(rows), bench_report.BOUND,
                          "dense Adam 16M: Keras built-in time / (the step's bytes")
    assert f"| {keras_bound['target']} | bandwidth bound | 8.57x | >= 5x | within reach |" in table

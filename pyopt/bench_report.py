"""``pyopt bench``: run the benchmark suites and write a readable report.

Usage (``pyopt bench [args]`` forwards its arguments to :func:`main`)::

    pyopt bench [--quick] [--out DIR] [--impl NAME ...] [--from-json FILE] [-- PYTEST_ARGS ...]

It runs the suites shipped in :mod:`pyopt.benchmarks` (``python -m pytest <that package's
directory> -c <its pytest.ini> --benchmark-only --benchmark-json=DIR/bench.json``; found from
the installed package, whatever the current directory), then writes into ``DIR``:

- ``bench.json``: pytest-benchmark's raw results (every round; machine info incl. ``pyopt.config()``);
- ``medians.json``: the same cases trimmed to what the report needs (per-step medians, bytes,
  GB/s, the machine): small enough to commit, and ``--from-json`` rebuilds the report from it;
- ``summary.md``: the headline table (one row per rule and workload: each implementation's
  ms/step and GB/s, pyopt's speedups), the machine, the key per-case tables, then the targets;
- ``results.md``: the headline, the machine, every case (ms per step, GB/s, % of the bandwidth
  probe, speedups over the Keras built-in and TF's fused training op, time to the first step,
  page faults per step), the probes, then the targets;
- ``throughput.png``: GB/s against size per implementation (float32 sweep, log x).

``--from-json FILE`` skips the run and rebuilds the report from an earlier ``bench.json`` or
``medians.json``.

GB/s counts the bytes a step must move per element: 28 for Adam (p, g, m, v read; p, m, v
written), AdamW, Adamax and Nadam, 20 for momentum, Adagrad, RMSprop and Lion, 36 for RMSprop
centered with momentum, 12 for gradient descent (float32; scaled by the item size for other
dtypes; clipping's extra read of g not counted). The probe is the best of the STREAM-like
loops of ``pyopt/benchmarks/probes.py`` at the first size at or above the step's
float32-equivalent element count (elements x item size / 4), measured in the same run. The
Embedding's steps (row-sparse gradients; a lazy one moves the rows present only) have no GB/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

RAW_JSON = "bench.json"
MEDIANS_JSON = "medians.json"
MEDIANS_FORMAT = "pyopt-bench-medians/1"
PAGE_BYTES = 4096
REFERENCES = {"keras": "Keras built-in", "tf_raw": "TF ResourceApply*"}
FUSED = ("pyopt_op", "pyopt_keras")
FLOOR = "tf_call_floor"  # pyopt.benchmarks.workloads.FLOOR_IMPL: a tf.function call that updates nothing
BOUND = "bandwidth bound"  # the implementation column of a target that bounds what any implementation can reach
# The benchmarks' rules (pyopt.benchmarks.workloads.RULES), in the report's order.
RULE_NAMES = {
    "gd": "gradient descent",
    "momentum": "momentum",
    "adam": "Adam",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "rmsprop_cm": "RMSprop centered + momentum",
    "adamax": "Adamax",
    "nadam": "Nadam",
    "lion": "Lion",
    "adamw": "AdamW",
}
# TF's fused op of each rule that has one (pyopt.benchmarks.implementations.TF_RAW_OPS).
TF_OPS = {
    "gd": "ResourceApplyGradientDescent",
    "momentum": "ResourceApplyKerasMomentum",
    "adam": "ResourceApplyAdam",
    "adagrad": "ResourceApplyAdagradV2",
    "rmsprop": "ResourceApplyRMSProp",
    "rmsprop_cm": "ResourceApplyCenteredRMSProp",
    "adamax": "ResourceApplyAdaMax",
}
# Issue #20's rules and their targets at 16M (float32): x Keras, x TF's op, fraction of the probe.
NEW_RULES = ("adagrad", "rmsprop", "rmsprop_cm", "adamax", "nadam", "lion", "adamw")
NEW_RULE_TARGETS = (5.0, 1.3, 0.85)
NO_GBPS_KINDS = ("train", "embedding")  # train steps: not one update; the Embedding: rows present only
IMPL_ORDER = (
    "pyopt_op",
    "pyopt_op_lazy",
    "pyopt_keras",
    "pyopt_keras_lazy",
    "pyopt_numpy",
    "pyopt_numpy_lazy",
    "pyopt_tf",
    "keras",
    "keras_xla",
    "chapter",
    "tf_raw",
    "numpy",
    "torch",
    FLOOR,
)


# --------------------------------------------------------------------------- running


def suites_dir() -> Path:
    """The directory of the installed :mod:`pyopt.benchmarks` (beside this module), not the cwd's."""
    from . import benchmarks

    return Path(benchmarks.__file__).resolve().parent


def suite_command(suites: Path, json_path: Path, quick: bool, impls, pytest_args) -> list:
    """The pytest command line of a run: the package's own pytest.ini (which loads its plugin)
    with its directory as rootdir, so no configuration around the installation applies."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(suites),
        "-c",
        str(suites / "pytest.ini"),
        "--rootdir",
        str(suites),
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        "-q",
        "-rfEs",
    ]
    cmd += ["--quick"] if quick else []
    cmd += [f"--impl={name}" for name in impls or ()]
    return cmd + list(pytest_args)


def cannot_run() -> str:
    """Why the suites cannot run from this installation ("" when they can)."""
    if importlib.util.find_spec("pytest") is None:
        return "the benchmark suites need pytest and pytest-benchmark: pip install 'pyopt[bench]'"
    suites = suites_dir()
    missing = [name for name in ("pytest.ini", "plugin.py", "test_update.py") if not (suites / name).is_file()]
    if missing:
        return f"the benchmark package {suites} lacks {', '.join(missing)}: reinstall pyopt"
    return ""


def run_suites(json_path: Path, quick: bool, impls, pytest_args) -> int:
    """Runs the suites into ``json_path`` (absolute), from its directory: ``python -m`` puts the
    cwd first on sys.path, and the output directory holds no ``pyopt`` to shadow the installed one."""
    cmd = suite_command(suites_dir(), json_path, quick, impls, pytest_args)
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=json_path.parent)


# --------------------------------------------------------------------------- results files

# The columns of medians.json: what the report reads of a row before comparing rows (a field a
# case lacks, e.g. a probe's first step, is null: the report reads every optional field with .get).
CASE_FIELDS = (
    "impl",
    "label",
    "rule",
    "clip",
    "workload",
    "kind",
    "dtype",
    "n_tensors",
    "n_elements",
    "bytes_per_step",
    "steps_per_call",
    "train",
    "median_s",
    "rounds",
    "gbps",
    "first_step_s",
    "page_faults_per_step",
    "note",
    "rows_touched",
)
# What machine_lines reads of pytest-benchmark's machine info (the rest, e.g. the CPU's flags, is dropped).
MACHINE_FIELDS = ("pyopt", "versions", "loadavg_at_end", "loadavg_at_start", "quick", "python_version", "datetime")


def read(json_path: Path) -> tuple[list, dict]:
    """Rows (one per case, times per step; not yet compared with each other) and the machine
    info, from pytest-benchmark's JSON or from a medians file."""
    with open(json_path, encoding="utf-8") as f:
        raw = json.load(f)
    if isinstance(raw, dict) and raw.get("format") == MEDIANS_FORMAT:
        return [dict(zip(raw["columns"], case)) for case in raw["cases"]], dict(raw["machine"])
    if not (isinstance(raw, dict) and "benchmarks" in raw):
        raise ValueError(
            f"{json_path} is neither pytest-benchmark's JSON (no 'benchmarks') nor a medians file "
            f"(format {MEDIANS_FORMAT!r})"
        )
    rows = []
    for b in raw["benchmarks"]:
        info = dict(b.get("extra_info") or {})
        if "impl" not in info:
            continue
        stats = b["stats"]
        per_call = int(info.get("steps_per_call") or 1)  # times are per step: a call ran this many
        info.update(
            name=b["name"],
            median_s=stats["median"] / per_call,
            iqr_s=stats["iqr"] / per_call,
            rounds=stats["rounds"],
            steps_per_call=per_call,
        )
        info["gbps"] = info["bytes_per_step"] / info["median_s"] / 1e9
        rows.append(info)
    machine = dict(raw.get("machine_info") or {}, datetime=raw.get("datetime"), commit=raw.get("commit_info", {}))
    return rows, machine


def load(json_path: Path) -> tuple[list, dict]:
    """:func:`read`, then each row compared with the probes and the references of its case."""
    rows, machine = read(json_path)
    _enrich(rows)
    return rows, machine


def write_medians(rows, machine, path: Path) -> None:
    """The rows of :func:`read` and the machine trimmed to what the report needs: a list of
    columns, then one case per line (``read`` accepts the file in place of pytest-benchmark's JSON)."""
    kept = {k: machine[k] for k in MACHINE_FIELDS if k in machine}
    brand = (machine.get("cpu") or {}).get("brand_raw")
    if brand:
        kept["cpu"] = {"brand_raw": brand}
    commit = machine.get("commit") or {}
    kept["commit"] = {k: commit[k] for k in ("id", "dirty") if k in commit}
    cases = [json.dumps([r.get(k) for k in CASE_FIELDS]) for r in rows]
    text = "{\n" + f' "format": {json.dumps(MEDIANS_FORMAT)},\n "machine": {json.dumps(kept)},\n'
    text += f' "columns": {json.dumps(CASE_FIELDS)},\n "cases": [\n  ' + ",\n  ".join(cases) + "\n ]\n}\n"
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- analysis


def _case(row) -> tuple:
    return (row["rule"], row.get("clip"), row["workload"], bool(row.get("train")))


def _step(row) -> tuple:
    """The update a row times, whatever the implementation and the steps per call."""
    return tuple(row.get(k) for k in ("rule", "clip", "dtype", "n_tensors", "n_elements", "kind", "train"))


def _itemsize(row) -> int:
    return {"float32": 4, "float64": 8, "bfloat16": 2}.get(row.get("dtype"), 4)


def _f32_elements(row) -> float:
    return row["n_elements"] * _itemsize(row) / 4


def _enrich(rows) -> None:
    """Add probe fraction and speedups over the references of the same case."""
    probe: dict = {}
    for r in rows:
        if r["kind"] == "probe":
            probe[r["n_elements"]] = max(probe.get(r["n_elements"], 0.0), r["gbps"])
    by_case: dict = {}
    for r in rows:
        by_case.setdefault(_case(r), {})[r["impl"]] = r
    for r in rows:
        if r["kind"] == "probe":
            continue
        if probe and r["kind"] not in NO_GBPS_KINDS:
            # The first probe size at or above the step's float32-equivalent parameter count (its
            # slots make the step's footprint larger still; a step above every probe takes the
            # largest): 200 x 10K = 2M elements is compared with the 4M probe, not with the 1M
            # one that fits in cache.
            elements = _f32_elements(r)
            size = min((n for n in probe if n >= elements), default=max(probe))
            r["probe_gbps"] = probe[size]
            r["probe_fraction"] = r["gbps"] / probe[size]
        for ref in REFERENCES:
            other = by_case[_case(r)].get(ref)
            if other is not None:
                r[f"x_{ref}"] = other["median_s"] / r["median_s"]
        plain = by_case.get((r["rule"], None, r["workload"], bool(r.get("train"))), {}).get(r["impl"])
        if r.get("clip") and plain is not None:
            r["clip_overhead"] = r["median_s"] / plain["median_s"]


def _find(rows, impl, rule, workload, clip=None, train=False):
    for r in rows:
        if (r["impl"], r["rule"], r["workload"], r.get("clip"), bool(r.get("train"))) == (
            impl,
            rule,
            workload,
            clip,
            train,
        ):
            return r
    return None


def evaluate_targets(rows) -> list:
    """The issue's targets, each as a dict: target, impl, measured, threshold, passed (None = not measured)."""
    out = []

    def add(target, impl, value, threshold, higher_is_better=True, unit="x", note=""):
        passed = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        out.append(
            dict(
                target=target,
                impl=impl,
                measured=value,
                threshold=threshold,
                unit=unit,
                op=">=" if higher_is_better else "<=",
                passed=passed,
                note=note,
            )
        )

    def ratio(impl, rule, workload, key, clip=None, train=False):
        r = _find(rows, impl, rule, workload, clip, train)
        return None if r is None else r.get(key)

    def best_bandwidth(step_row):
        """Bytes/s: the probe at this size, or any implementation of the same step that moved
        its bytes faster (at any steps per call; not the floor, whose GB/s is nominal)."""
        moved = [r["gbps"] for r in rows if _step(r) == _step(step_row) and r["impl"] != FLOOR]
        return max([step_row["probe_gbps"], *moved]) * 1e9

    def bandwidth_bound(ref, rule, workload):
        """The reference's time over the step's bytes at the best bandwidth seen: the most any
        implementation that moves those bytes could gain on it in this run. Measured, with the
        machine's noise, like the speedups it bounds."""
        r = _find(rows, ref, rule, workload)
        if r is None or not r.get("probe_gbps"):
            return None
        return r["median_s"] / (r["bytes_per_step"] / best_bandwidth(r))

    def dense_targets(rule, label_ref, keras_threshold, raw_threshold, label=""):
        name = RULE_NAMES[rule]
        for impl in FUSED:
            add(
                f"dense {name} 16M vs Keras built-in{label}",
                impl,
                ratio(impl, rule, "dense_16M", "x_keras"),
                keras_threshold,
            )
            add(
                f"dense {name} 16M vs {label_ref}{label}",
                impl,
                ratio(impl, rule, "dense_16M", "x_tf_raw"),
                raw_threshold,
            )
        add(
            f"dense {name} 16M: Keras built-in time / (the step's bytes at the best bandwidth seen), the bound "
            f"for any implementation{label}",
            BOUND,
            bandwidth_bound("keras", rule, "dense_16M"),
            keras_threshold,
        )
        add(
            f"dense {name} 16M: {label_ref} time / (the step's bytes at the best bandwidth seen), the bound for "
            f"any implementation{label}",
            BOUND,
            bandwidth_bound("tf_raw", rule, "dense_16M"),
            raw_threshold,
        )

    dense_targets("adam", "ResourceApplyAdam", 5.0, 1.5)
    for impl in (*FUSED, "pyopt_numpy"):
        mine, torch = _find(rows, impl, "adam", "dense_16M"), _find(rows, "torch", "adam", "dense_16M")
        add(
            "dense Adam 16M vs torch fused Adam",
            impl,
            None if mine is None or torch is None else torch["median_s"] / mine["median_s"],
            1.0,
        )
        add(
            "dense Adam 16M, fraction of bandwidth probe",
            impl,
            ratio(impl, "adam", "dense_16M", "probe_fraction"),
            0.85,
            unit="%",
        )

    def floor_and_bytes_estimate(rule, workload):
        """Keras's time over an estimate of the least a TF implementation can take: the call (or
        loop) floor, then the step's bytes at the best bandwidth this run saw for them (the
        probe at this size, or any implementation of the same step, at any steps per call,
        that moved them faster: e.g. the NumPy kernels when part of the step stays in cache).
        An estimate, not a strict bound: both terms are measured, with the machine's noise."""
        floor, keras = _find(rows, FLOOR, rule, workload), _find(rows, "keras", rule, workload)
        if floor is None or keras is None or not floor.get("probe_gbps"):
            return None
        return keras["median_s"] / (floor["median_s"] + floor["bytes_per_step"] / best_bandwidth(floor))

    def small_steps(label, rule, workload, steps_per_call, threshold):
        """One step per tf.function call, then ``steps_per_call`` steps per call (the update's own
        cost), each with Keras's time over the floor (no TF implementation can beat the floor)
        and over the floor plus the step's bytes (an estimated ceiling, see above)."""
        for impl in FUSED:
            add(f"{label} vs Keras built-in", impl, ratio(impl, rule, workload, "x_keras"), threshold)
        add(
            f"{label}: Keras built-in time / call floor (the bound at one step per call)",
            FLOOR,
            ratio(FLOOR, rule, workload, "x_keras"),
            threshold,
        )
        add(
            f"{label}: Keras built-in time / (call floor + the step's bytes at the best bandwidth seen), "
            "an estimated ceiling",
            FLOOR,
            floor_and_bytes_estimate(rule, workload),
            threshold,
        )
        looped = f"{workload}_{steps_per_call}_per_call"
        for impl in FUSED:
            add(
                f"{label} vs Keras built-in, {steps_per_call} steps per call",
                impl,
                ratio(impl, rule, looped, "x_keras"),
                threshold,
            )
        add(
            f"{label}, {steps_per_call} steps per call: Keras built-in time / loop floor (the bound there)",
            FLOOR,
            ratio(FLOOR, rule, looped, "x_keras"),
            threshold,
        )
        add(
            f"{label}, {steps_per_call} steps per call: Keras built-in time / (loop floor + the step's bytes at "
            "the best bandwidth seen), an estimated ceiling",
            FLOOR,
            floor_and_bytes_estimate(rule, looped),
            threshold,
        )

    keras_x, raw_x, probe_x = NEW_RULE_TARGETS
    for rule in NEW_RULES:
        name = RULE_NAMES[rule]
        for impl in FUSED:
            add(f"dense {name} 16M vs Keras built-in", impl, ratio(impl, rule, "dense_16M", "x_keras"), keras_x)
            if rule in TF_OPS:
                add(f"dense {name} 16M vs {TF_OPS[rule]}", impl, ratio(impl, rule, "dense_16M", "x_tf_raw"), raw_x)
        for impl in (*FUSED, "pyopt_numpy"):
            add(
                f"dense {name} 16M, fraction of bandwidth probe",
                impl,
                ratio(impl, rule, "dense_16M", "probe_fraction"),
                probe_x,
                unit="%",
            )
        add(
            f"dense {name} 16M: Keras built-in time / (the step's bytes at the best bandwidth seen), the bound "
            "for any implementation",
            BOUND,
            bandwidth_bound("keras", rule, "dense_16M"),
            keras_x,
        )
        if rule in TF_OPS:
            add(
                f"dense {name} 16M: {TF_OPS[rule]} time / (the step's bytes at the best bandwidth seen), the bound "
                "for any implementation",
                BOUND,
                bandwidth_bound("tf_raw", rule, "dense_16M"),
                raw_x,
            )
    small_steps("Adam 200 x 10K tensors", "adam", "many_200x10K", 10, 3.5)
    for rule in ("adam", "gd", "momentum"):
        small_steps(f"chapter MLP 13-4-1 {RULE_NAMES[rule]} update", rule, "mlp_13_4_1", 100, 3.0)
    for rule in ("gd", "momentum"):
        dense_targets(rule, "TF ResourceApply*", 5.0, 1.5, label=" (same order as Adam)")
    for r in sorted(rows, key=_sort_key):
        if r.get("clip") and r["impl"] in (*FUSED, "pyopt_numpy"):
            # The norm must be known before the first element is updated, so a clipped step reads
            # g twice: (B + itemsize) / B bytes per element once the step no longer fits in cache
            # (B: the unclipped step's bytes, which bytes_per_step counts). The overhead to expect
            # when the unclipped step runs at full bandwidth; less where it does not.
            moved = round(r["bytes_per_step"] / r["n_elements"])
            clipped = moved + _itemsize(r)
            add(
                f"{r['clip']} {RULE_NAMES[r['rule']]} {r['workload']} vs unclipped (bytes ratio beyond the caches: "
                f"{clipped / moved:.2f}x, {clipped} vs {moved} bytes/element)",
                r["impl"],
                r.get("clip_overhead"),
                1.2,
                higher_is_better=False,
            )
    for r in sorted(rows, key=_sort_key):
        if r["impl"] in FUSED and r["kind"] == "dense" and not r.get("clip") and r["n_elements"] >= 1 << 22:
            param_bytes = r["n_elements"] * 4
            frac = r["page_faults_per_step"] * PAGE_BYTES / param_bytes
            add(
                f"per-step allocation, {RULE_NAMES[r['rule']]} {r['workload']} (page-faulted bytes / model bytes)",
                r["impl"],
                frac,
                0.01,
                higher_is_better=False,
                unit="",
            )
    return out


# --------------------------------------------------------------------------- output


def _sort_key(r) -> tuple:
    kinds = ("dense", "dtype", "many", "mlp", "train", "probe")
    impl = IMPL_ORDER.index(r["impl"]) if r["impl"] in IMPL_ORDER else len(IMPL_ORDER)
    return (
        kinds.index(r["kind"]) if r["kind"] in kinds else 9,
        (*RULE_NAMES, "probe").index(r["rule"]) if r["rule"] in (*RULE_NAMES, "probe") else len(RULE_NAMES) + 1,
        r.get("clip") or "",
        r["dtype"],
        r["n_elements"],
        r["workload"],
        impl,
        r["impl"],
    )


def _num(x, digits=3) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"


def _value(t) -> str:
    v = t["measured"]
    if v is None:
        return "not measured"
    return {"x": f"{v:.2f}x", "%": f"{v:.0%}"}.get(t["unit"], f"{v:.4f}")


def _need(t) -> str:
    return f"{t['threshold']:.0%}" if t["unit"] == "%" else f"{t['threshold']:g}{t['unit']}"


def _result(t, bold: bool) -> str:
    """PASS / FAIL for a target; for a bound (the floor's and the bandwidth rows: what any
    implementation could reach) whether the target is within reach of it at all."""
    if t["impl"] in (FLOOR, BOUND):
        words = {True: "within reach", False: "out of reach", None: "n/a"}
    else:
        words = {True: "PASS", False: "FAIL", None: "n/a"}
    word = words[t["passed"]]
    return f"**{word}**" if bold and t["passed"] is False else word


def targets_table(targets) -> str:
    lines = ["| target | implementation | measured | needed | result |", "|---|---|---:|---:|:---:|"]
    for t in targets:
        result = _result(t, bold=True)
        need = f"{t['op']} {_need(t)}"
        lines.append(f"| {t['target']} | {t['impl']} | {_value(t)} | {need} | {result} |")
    return "\n".join(lines)


def print_targets(targets) -> None:
    for t in targets:
        result = _result(t, bold=False)
        print(f"{result}  {t['target']} [{t['impl']}]: {_value(t)} (needed {t['op']} {_need(t)})")


def cases_table(rows, only=None) -> str:
    head = (
        "| case | implementation | ms/step | GB/s | % probe | x Keras | x TF op | first step (s) | "
        "faults/step | rounds |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=_sort_key):
        if r["kind"] == "probe" or (only and not only(r)):
            continue
        case = f"{RULE_NAMES[r['rule']]}{' + ' + r['clip'] if r.get('clip') else ''}, {r['workload']}"
        if r["dtype"] != "float32":
            case += f" ({r['dtype']})"
        train = bool(r.get("train"))
        no_gbps = train or r["kind"] in NO_GBPS_KINDS
        frac = r.get("probe_fraction")
        label = r["label"] + (" (see note)" if r.get("note") else "")
        lines.append(
            " | ".join(
                [
                    f"| {case}",
                    label,
                    _num(r["median_s"] * 1e3),
                    "" if no_gbps else _num(r["gbps"]),
                    "" if frac is None else f"{frac:.0%}",
                    _num(r.get("x_keras")),
                    _num(r.get("x_tf_raw")),
                    _num(r.get("first_step_s"), 2),
                    f"{r.get('page_faults_per_step', 0):.0f}",
                    f"{r['rounds']} |",
                ]
            )
        )
    notes = sorted(
        {f"- {r['label']}, {r['workload']}: {r['note']}" for r in rows if r.get("note") and (not only or only(r))}
    )
    return "\n".join(lines + ([""] + ["Notes:"] + notes if notes else []))


def probe_table(rows) -> str:
    lines = ["| size | probe | ms | GB/s |", "|---|---|---:|---:|"]
    for r in sorted((r for r in rows if r["kind"] == "probe"), key=lambda r: (r["n_elements"], r["impl"])):
        lines.append(f"| {r['workload']} | {r['impl']} | {_num(r['median_s'] * 1e3)} | {_num(r['gbps'])} |")
    return "\n".join(lines)


def machine_lines(machine) -> str:
    cfg = machine.get("pyopt", {})
    versions = machine.get("versions", {})
    load = machine.get("loadavg_at_end", machine.get("loadavg_at_start"))  # older runs: same value, misnamed
    commit = machine.get("commit", {})
    items = [
        (
            "CPU",
            ", ".join(
                str(x)
                for x in (
                    cfg.get("cpu", machine.get("cpu", {}).get("brand_raw", "?")),
                    f"{cfg.get('cores', '?')} cores",
                    cfg.get("cpu_signature"),
                    cfg.get("last_level_cache"),
                )
                if x
            ),
        ),
        ("pyopt ISA path", f"{cfg.get('isa', '?')} (supported: {cfg.get('supported_isas', '?')})"),
        ("pyopt NumPy threads", cfg.get("numpy_threads", "?")),
        (
            "TF op library",
            ", ".join(f"{k}={v}" for k, v in cfg.items() if k.startswith(("tf", "ops", "fused", "library"))),
        ),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
        ("Python", cfg.get("python", machine.get("python_version", "?"))),
        (
            "load average (1, 5, 15 min) at the end of the run",
            "" if load is None else ", ".join(f"{x:.2f}" for x in load),
        ),
        (
            "run finished",
            f"{machine.get('datetime', '?')}, commit {str(commit.get('id', '?'))[:10]}"
            f"{' (dirty tree)' if commit.get('dirty') else ''}, {'--quick' if machine.get('quick') else 'full'}",
        ),
    ]
    return "\n".join(f"- {k}: {v}" for k, v in items if v not in ("", None))


def plot(rows, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rules = [r for r in ("gd", "momentum", "adam") if any(x["kind"] == "dense" and x["rule"] == r for x in rows)]
    if not rules:
        return False
    fig, axes = plt.subplots(1, len(rules), figsize=(5.5 * len(rules), 5), sharey=True, squeeze=False)
    probe: dict = {}
    for r in rows:
        if r["kind"] == "probe":
            probe[r["n_elements"]] = max(probe.get(r["n_elements"], 0.0), r["gbps"])
    for ax, rule in zip(axes[0], rules):
        sweep = [r for r in rows if r["kind"] == "dense" and r["rule"] == rule and not r.get("clip")]
        for impl in sorted({r["impl"] for r in sweep}, key=lambda i: IMPL_ORDER.index(i) if i in IMPL_ORDER else 99):
            pts = sorted((r["n_elements"], r["gbps"], r["label"]) for r in sweep if r["impl"] == impl)
            style = "-o" if impl.startswith("pyopt") else "--."
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=pts[0][2], markersize=4)
        if probe:
            sizes = sorted(probe)
            ax.plot(sizes, [probe[n] for n in sizes], "k:", linewidth=2, label="bandwidth probe (best)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{RULE_NAMES[rule]}, float32")
        ax.set_xlabel("elements per step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("GB/s (nominal bytes per element)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


LEGEND = (
    "Median of rounds per case, per optimizer step. GB/s counts the bytes a step must move: 28 (Adam, AdamW, "
    "Adamax, Nadam), 20 (momentum, Adagrad, RMSprop, Lion), 36 (RMSprop centered + momentum), 12 (gradient "
    "descent) per float32 element (scaled by the item size for other dtypes; "
    'clipping\'s extra read of the gradient not counted). "k steps per call": k steps in a loop inside one '
    "tf.function call (as Keras' steps_per_execution), times still per step. Train steps: forward, "
    "backward and update of a plain-variable MLP on a batch of 32 in one tf.function (torch: the same "
    "maths), no GB/s. The Embedding (1M x 64, an IndexedSlices gradient of 4096 ids with repeats): "
    "pyopt's step with the densified gradient and its lazy step (rows present only), no GB/s."
)
CASES_LEGEND = (
    "% probe: of the best STREAM-like probe at the first size at or above the step's float32-equivalent "
    "element count, in the same run; x Keras / x TF op: speedup over the Keras built-in / TF's "
    "ResourceApply* ops in the same case; faults/step: minor page faults per step (fresh pages for "
    "temporaries)."
)

# The headline: the questions a user asks first, one row per rule and workload (label, rule,
# clip, workload, train step); a row appears where the run measured it.
HEADLINE_CASES = (
    ("Adam, float32 16M (one tensor)", "adam", None, "dense_16M", False),
    ("Adam + clipnorm, float32 16M", "adam", "clipnorm", "dense_16M", False),
    ("momentum, float32 16M", "momentum", None, "dense_16M", False),
    ("gradient descent, float32 16M", "gd", None, "dense_16M", False),
    ("Adagrad, float32 16M", "adagrad", None, "dense_16M", False),
    ("RMSprop, float32 16M", "rmsprop", None, "dense_16M", False),
    ("RMSprop centered + momentum, float32 16M", "rmsprop_cm", None, "dense_16M", False),
    ("Adamax, float32 16M", "adamax", None, "dense_16M", False),
    ("Nadam, float32 16M", "nadam", None, "dense_16M", False),
    ("Lion, float32 16M", "lion", None, "dense_16M", False),
    ("AdamW, float32 16M", "adamw", None, "dense_16M", False),
    ("Adam, 200 tensors x 10K", "adam", None, "many_200x10K", False),
    ("Adam, 200 x 10K, 10 steps per call", "adam", None, "many_200x10K_10_per_call", False),
    ("Adam, MLP 13-4-1 update", "adam", None, "mlp_13_4_1", False),
    ("Adam, MLP 13-4-1 update, 100 steps per call", "adam", None, "mlp_13_4_1_100_per_call", False),
    ("Adam, MLP 13-4-1 train step", "adam", None, "train_mlp_13_4_1", True),
    ("momentum, MLP 13-4-1 train step", "momentum", None, "train_mlp_13_4_1", True),
    ("gradient descent, MLP 13-4-1 train step", "gd", None, "train_mlp_13_4_1", True),
    ("Adam, 10M-parameter MLP train step", "adam", None, "train_mlp_10M", True),
)
# The MLP's update moves 1.9 KB (Adam): its time is the call's, its GB/s says nothing.
NO_GBPS_WORKLOADS = ("mlp_13_4_1", "mlp_13_4_1_100_per_call")
HEADLINE_IMPLS = {
    "pyopt_keras": "pyopt Keras",
    "pyopt_op": "pyopt op",
    "pyopt_numpy": "pyopt NumPy",
    "keras": "Keras",
    "keras_xla": "Keras XLA",
    "tf_raw": "TF op",
    "torch": "torch",
}
# pyopt's speedups like for like: the Keras optimizers (apply_gradients in a tf.function), the
# ops (in a tf.function), the eager array kernels.
HEADLINE_SPEEDUPS = (("pyopt_keras", "keras"), ("pyopt_op", "tf_raw"), ("pyopt_numpy", "torch"))
HEADLINE_LEGEND = (
    "Each cell: ms per step (GB/s; none for train steps and the MLP's update, whose time is the "
    "call's). pyopt's speedups compare like with like: its Keras optimizer "
    "(`pyopt.optimizers`) with Keras's, both `apply_gradients` in a `tf.function`; its op "
    "(`pyopt.ops`) with TF's `ResourceApply*` ops, both in a `tf.function`; its NumPy kernels "
    "(`pyopt.kernels`) with torch's fused optimizer, both called eagerly on arrays. Keras XLA: the "
    "Keras optimizer compiled with XLA (what `model.fit` does by default on TensorFlow)."
)


def headline_rows(rows) -> list:
    """Per measured headline case: its label, whether it shows GB/s, the row of each headline
    implementation that ran it, and pyopt's speedups {(pyopt impl, reference): reference time /
    pyopt time}."""
    out = []
    for label, rule, clip, workload, train in HEADLINE_CASES:
        cells = {impl: r for impl in HEADLINE_IMPLS if (r := _find(rows, impl, rule, workload, clip, train))}
        if not cells:
            continue
        speedups = {
            (mine, ref): cells[ref]["median_s"] / cells[mine]["median_s"]
            for mine, ref in HEADLINE_SPEEDUPS
            if mine in cells and ref in cells
        }
        gbps = not train and workload not in NO_GBPS_WORKLOADS
        out.append(dict(case=label, gbps=gbps, cells=cells, speedups=speedups))
    return out


def headline_table(rows) -> str:
    found = headline_rows(rows)
    if not found:
        return "No headline case was measured in this run."
    head = [
        "case",
        *HEADLINE_IMPLS.values(),
        *(f"{HEADLINE_IMPLS[mine]} vs {HEADLINE_IMPLS[ref]}" for mine, ref in HEADLINE_SPEEDUPS),
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for h in found:
        cells = []
        for impl in HEADLINE_IMPLS:
            r = h["cells"].get(impl)
            if r is None:
                cells.append("")
            else:
                ms = _num(r["median_s"] * 1e3)
                cells.append(f"{ms} ({_num(r['gbps'])})" if h["gbps"] else ms)
        for pair in HEADLINE_SPEEDUPS:
            x = h["speedups"].get(pair)
            cells.append("" if x is None else f"{_num(x)}x")
        lines.append("| " + " | ".join([h["case"], *cells]) + " |")
    return "\n".join(lines)


# Per-case tables of the summary (the key cases; results.md has every case).
KEY_TABLES = (
    (
        "float32, 16M elements, one tensor",
        lambda r: r["kind"] == "dense" and r["n_elements"] == 1 << 24 and not r.get("clip"),
    ),
    ("float32, 64M elements, one tensor", lambda r: r["kind"] == "dense" and r["n_elements"] == 1 << 26),
    ("Many small tensors", lambda r: r["kind"] == "many" and not r.get("clip")),
    ("The chapter's MLP 13-4-1: the update alone", lambda r: r["kind"] == "mlp"),
    ("Embedding 1M x 64, IndexedSlices gradients (dense and lazy steps)", lambda r: r["kind"] == "embedding"),
    ("Whole train steps (forward, backward, update)", lambda r: r["kind"] == "train"),
)


def write_report(rows, machine, out: Path) -> list:
    """summary.md, results.md and throughput.png from compared rows (:func:`load`); the targets."""
    targets = evaluate_targets(rows)
    has_plot = plot(rows, out / "throughput.png")
    headline = "## Headline\n\n" + HEADLINE_LEGEND + "\n\n" + headline_table(rows)
    machine_part = "## Machine\n\n" + machine_lines(machine)
    targets_part = "## Targets\n\n" + targets_table(targets)
    key = [f"### {title}\n\n" + cases_table(rows, only) for title, only in KEY_TABLES if any(only(r) for r in rows)]
    summary = [
        "# pyopt benchmarks: summary\n\n" + LEGEND,
        headline,
        "Every case: [results.md](results.md)"
        + ("; GB/s against size: [throughput.png](throughput.png)" if has_plot else "")
        + ". Reproduce with `pyopt bench --out DIR` "
        "(every case, ~30 minutes on 2 cores) or `pyopt bench --quick --out DIR` (a subset, ~3.5 minutes); "
        f"`pyopt bench --from-json DIR/{MEDIANS_JSON} --out DIR` rebuilds the report.",
        machine_part,
        *(["## Key cases\n\n" + CASES_LEGEND] + key if key else []),
        targets_part,
    ]
    (out / "summary.md").write_text("\n\n".join(summary) + "\n", encoding="utf-8")
    results = [
        "# pyopt benchmarks: every case\n\n" + LEGEND,
        headline,
        *(["![throughput against size](throughput.png)"] if has_plot else []),
        machine_part,
        "## All cases\n\n" + CASES_LEGEND + "\n\n" + cases_table(rows),
        "## Bandwidth probes\n\n" + probe_table(rows),
        targets_part,
    ]
    (out / "results.md").write_text("\n\n".join(results) + "\n", encoding="utf-8")
    return targets


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyopt bench", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a subset of cases and fewer rounds (~3.5 minutes)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output directory (default: bench_out)")
    p.add_argument("--impl", action="append", help="only this implementation (repeatable), e.g. pyopt_op, keras")
    p.add_argument(
        "--from-json", type=Path, help=f"skip the run: rebuild the report from this {RAW_JSON} or {MEDIANS_JSON}"
    )
    p.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. -- -k adam)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    if args.from_json:
        json_path = args.from_json
    else:
        problem = cannot_run()
        if problem:
            print(f"pyopt bench: error: {problem}", file=sys.stderr)
            return 2
        json_path = (args.out / RAW_JSON).resolve()
        json_path.unlink(missing_ok=True)  # a failed run must not report an earlier run's results
        status = run_suites(json_path, args.quick, args.impl, args.pytest_args)
        if not json_path.is_file():
            print(f"pyopt bench: error: pytest exited with {status} and wrote no results", file=sys.stderr)
            return status or 1
    try:
        rows, machine = read(json_path)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"pyopt bench: error: cannot read {json_path}: {exc}", file=sys.stderr)
        return 2
    write_medians(rows, machine, args.out / MEDIANS_JSON)
    _enrich(rows)
    targets = write_report(rows, machine, args.out)
    print(headline_table(rows) + "\n")
    print_targets(targets)
    written = [
        name for name in ("summary.md", "results.md", "throughput.png", MEDIANS_JSON) if (args.out / name).is_file()
    ]
    print(f"\nreport in {args.out}: {', '.join(written)} (from {json_path})")
    if status:
        print(
            f"pyopt bench: warning: pytest exited with {status} (failed cases are missing from the report)",
            file=sys.stderr,
        )
    return status


if __name__ == "__main__":
    sys.exit(main())

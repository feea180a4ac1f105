"""Paired re-measurement of one case: a few implementations timed round by round in one process.

A pytest-benchmark run times each case's rounds back to back, so on a shared machine a slow
minute lands on whichever implementation runs then. Here every round runs each
implementation once (``reps`` calls), in an order that changes from round to round, and the
ratios are taken within a round before the median: drift hits all of them alike.

    python -m pyopt.benchmarks.paired adam dense_16M pyopt_op,tf_raw,torch,keras
    python -m pyopt.benchmarks.paired momentum dense_16M pyopt_op,pyopt_numpy --clip clipnorm --with-unclipped
    python -m pyopt.benchmarks.paired adam many_200x10K_10_per_call pyopt_op,keras,tf_call_floor --rounds 8
    python -m pyopt.benchmarks.paired adam dense_16M pyopt_op,pyopt_numpy,torch --processes 3
    python -m pyopt.benchmarks.paired adam many_200x10K pyopt_op,keras,tf_call_floor --with-concrete
    python -m pyopt.benchmarks.paired adagrad dense_16M pyopt_op,keras,tf_raw,torch --with-probe --processes 3

The first implementation is the base: "x base" is (its time) / (this one's time) per round,
median over rounds (> 1: this one is faster). ``--with-unclipped`` also times each
implementation unclipped and prints clipped / unclipped per implementation.
``--with-concrete`` also times each TF implementation through its ConcreteFunction: the traced
graph called directly, without the per-call lookup of the trace that a ``tf.function`` call
makes (it hashes every captured input: with hundreds of variables, about half of the call
floor). Every implementation is checked once against the float64 reference of the first
step, as in the benchmark suites. ``--with-probe`` also times the bandwidth probes
(:mod:`pyopt.benchmarks.probes`: ``a += b`` on the kernels' threads and the core's triad) at
the step's float32-equivalent size in the same rounds, and prints each implementation's GB/s
(the step's nominal bytes) and its % of the faster probe, per round then the median.
``--processes K`` repeats the whole comparison in K fresh processes and
prints each ratio per process and their median. On the 2-core VM of the README one process
timed the op's Adam 16M step at 7.6 ms and the next, a minute later, at 10.3 ms: a single
process's ratios can mislead. Workloads: the names of the suites (``dense_16M``, ``many_200x10K``,
``mlp_13_4_1_100_per_call``, ...).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .implementations import IMPLEMENTATIONS, Unavailable
from .probes import PROBE_BYTES_PER_ELEMENT, expected_after, probe_step
from .probes import arrays as probe_arrays
from .workloads import CLIPS, DTYPES, FLOOR_IMPL, RULES, check_runner, data_for, update_cases

# The probes --with-probe interleaves (the single-threaded one is never the faster on the kernels' threads).
PAIRED_PROBES = ("probe_rmw_mt", "probe_triad")


def round_orders(names: list[str], rounds: int, seed: int = 0) -> list[list[str]]:
    """The order of each round. Rounds come in blocks of len(names): within a block, each round
    starts one name further along the block's order, so every name leads once per block (the
    first block keeps the given order; names lead equally often when rounds is a multiple of
    len(names)). Each later block shuffles the order (seeded), so a
    name does not always run right after the same other one: what an implementation leaves
    behind (torch's OpenMP threads spin for a while after a call) would otherwise always land
    on the same successor."""
    rng = random.Random(seed)
    orders, base = [], list(names)
    for r in range(rounds):
        if r and r % len(names) == 0:
            base = rng.sample(names, len(names))
        k = r % len(names)
        orders.append(base[k:] + base[:k])
    return orders


def time_rounds(
    steps: dict[str, Callable[[], object]],
    rounds: int,
    reps: int,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each step, one entry per round, in the orders of round_orders."""
    if rounds < 1 or reps < 1:
        raise ValueError(f"rounds and reps must be >= 1, got rounds={rounds}, reps={reps}")
    times: dict[str, list[float]] = {n: [] for n in steps}
    for order in round_orders(list(steps), rounds, seed):
        for name in order:
            t0 = clock()
            for _ in range(reps):
                steps[name]()
            times[name].append((clock() - t0) / reps)
    return times


def summarize(times: dict[str, list[float]], steps_per_call: int = 1) -> list[dict]:
    """Per name: the median and the least of its per-round means (seconds per step), and the
    median over rounds of base / this."""
    base = next(iter(times))
    rows = []
    for name, ts in times.items():
        ratios = [b / t for b, t in zip(times[base], ts)]
        rows.append(
            dict(
                name=name,
                median_s=statistics.median(ts) / steps_per_call,
                min_s=min(ts) / steps_per_call,
                x_base=statistics.median(ratios),
            )
        )
    return rows


def ratio_of(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of times[num] / times[den] (e.g. clipped / unclipped)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def probe_fractions(
    times: dict[str, list[float]], bytes_per_call: dict[str, float], probes: dict[str, float]
) -> dict[str, float]:
    """Per implementation (``bytes_per_call``: its nominal bytes per timed call): the median over
    rounds of its bytes/s over the faster probe's in the same round (``probes``: each probe's
    bytes per call)."""
    out = {}
    for name, nbytes in bytes_per_call.items():
        per_round = []
        for r, t in enumerate(times[name]):
            probe_rate = max(probes[p] / times[p][r] for p in probes)
            per_round.append(nbytes / t / probe_rate)
        out[name] = statistics.median(per_round)
    return out


def variant_name(name: str, unclipped: bool = False, concrete: bool = False) -> str:
    """The row of one implementation: 'pyopt_op', 'pyopt_op (unclipped)', 'pyopt_op (unclipped, concrete)'."""
    tags = [t for t, on in (("unclipped", unclipped), ("concrete", concrete)) if on]
    return f"{name} ({', '.join(tags)})" if tags else name


def workloads() -> dict:
    return {w.name: w for w, _, _ in update_cases(quick=False)}


def _build(name, rule, clip, data, workload, concrete: bool = False):
    """The step of one implementation, traced, warm and checked against the reference.
    ``concrete`` (TF implementations, ``kind == "tf"``, only): the step's ConcreteFunction,
    i.e. the traced graph called directly."""
    runner = IMPLEMENTATIONS[name].build(rule, clip, data, steps_per_call=workload.steps_per_call)
    if concrete:
        runner.step = runner.step.get_concrete_function()
    runner.step()  # trace / compile, then the value check (the call floor updates nothing)
    if name != FLOOR_IMPL:
        check_runner(data, rule, clip, name, runner, steps=workload.steps_per_call)
    runner.step()
    return runner.step


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: _child_argv must recognise every spelling of --processes and --json.
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("rule", choices=RULES)
    p.add_argument("workload", help="a workload of the suites, e.g. dense_16M, many_200x10K, mlp_13_4_1")
    p.add_argument("impls", help="comma-separated implementation names; the first is the base")
    p.add_argument("--clip", choices=[c for c in CLIPS if c], default=None)
    p.add_argument("--with-unclipped", action="store_true", help="with --clip: also time each unclipped")
    p.add_argument(
        "--with-concrete",
        action="store_true",
        help="also time each TF implementation through its ConcreteFunction (rows '... (concrete)'): "
        "the traced graph called directly, without tf.function's per-call lookup of the "
        "trace, which hashes every captured input",
    )
    p.add_argument(
        "--with-probe",
        action="store_true",
        help="also time the bandwidth probes at the step's size in the same rounds: GB/s and %% of probe per "
        "implementation",
    )
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--reps", type=int, default=5, help="calls per implementation per round")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the whole comparison in this many fresh processes, one after another, and "
        "also print each implementation's ratio per process and their median (the same "
        "step can take 1.4x longer in one process than in the next)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the round orders (process k of --processes: seed + k)")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the rows (and clip ratios) here; with --processes, the combined rows "
        "(x_base_per_process) and each process's clip ratios",
    )
    return p


def _child_argv(argv: list[str], k: int, seed: int, json_path: Path) -> list[str]:
    """The arguments of child process k: argv without --processes, --seed and --json (either
    spelling), then --processes 1, its own seed and its own JSON file."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--processes", "--seed", "--json"):
            skip = True
            continue
        if a.startswith(("--processes=", "--seed=", "--json=")):
            continue
        out.append(a)
    return out + ["--processes", "1", "--seed", str(seed + k), "--json", str(json_path)]


def combine_processes(runs: list[dict]) -> list[dict]:
    """Per implementation of the first run, in its order: its x base in each process (None
    where that process could not run it), the median of those, and the median over processes
    of its median ms/step. Every run must have the same base (its first row)."""
    bases = {run["rows"][0]["name"] for run in runs}
    if len(bases) != 1:
        raise ValueError(f"the processes ran against different bases {sorted(bases)}: their ratios do not combine")
    out = []
    for row in runs[0]["rows"]:
        found = [next((r for r in run["rows"] if r["name"] == row["name"]), None) for run in runs]
        present = [r for r in found if r is not None]
        out.append(
            dict(
                name=row["name"],
                x_base_per_process=[None if r is None else r["x_base"] for r in found],
                x_base_median=statistics.median(r["x_base"] for r in present),
                median_s=statistics.median(r["median_s"] for r in present),
            )
        )
    return out


def _run_processes(args, argv: list[str]) -> int:
    """Runs this module ``args.processes`` times, one after another, then the combined table."""
    import subprocess
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.processes):
            out = Path(tmp) / f"run{k}.json"
            print(f"--- process {k + 1} of {args.processes}", flush=True)
            child = [sys.executable, "-m", "pyopt.benchmarks.paired", *_child_argv(argv, k, args.seed, out)]
            status = subprocess.call(child)
            if status != 0:
                print(
                    f"process {k + 1} of {args.processes} exited with status {status}; nothing combined",
                    file=sys.stderr,
                )
                return status if status > 0 else 1
            runs.append(json.loads(out.read_text()))
    try:
        rows = combine_processes(runs)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    base = rows[0]["name"]
    print(f"\nover {len(runs)} processes: x {base} per process (each the median over its rounds; - : not run)")
    print(f"| implementation | ms/step (median of processes) | x {base}, per process | x {base}, median |")
    print("|---|---:|---|---:|")
    for r in rows:
        per = ", ".join("-" if x is None else f"{x:.2f}" for x in r["x_base_per_process"])
        print(f"| {r['name']} | {r['median_s'] * 1e3:.3f} | {per} | {r['x_base_median']:.2f} |")
    clip_ratios = [run.get("clip_ratios", {}) for run in runs]
    for name in sorted({k for c in clip_ratios for k in c}):
        vals = [c[name] for c in clip_ratios if name in c]
        print(
            f"{name}: {args.clip} / unclipped per process {', '.join(f'{v:.3f}' for v in vals)}; "
            f"median {statistics.median(vals):.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(dict(rows=rows, clip_ratios_per_process=clip_ratios, runs=runs), indent=1))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.processes < 1:
        raise SystemExit(f"--processes must be >= 1, got {args.processes}")
    if args.processes > 1:
        return _run_processes(args, argv)
    known = workloads()
    if args.workload not in known:
        raise SystemExit(f"unknown workload {args.workload!r}; one of: {', '.join(sorted(known))}")
    names = [n for n in args.impls.split(",") if n]
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown or not names:
        raise SystemExit(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLEMENTATIONS)}")
    if args.with_unclipped and not args.clip:
        raise SystemExit("--with-unclipped needs --clip")
    workload = known[args.workload]
    data = data_for(workload)
    clips = [args.clip] + ([None] if args.with_unclipped else [])
    steps = {}
    for name in names:
        for clip in clips:
            concrete_too = args.with_concrete and IMPLEMENTATIONS[name].kind == "tf"
            for concrete in [False] + ([True] if concrete_too else []):
                key = variant_name(name, unclipped=clip != args.clip, concrete=concrete)
                try:
                    steps[key] = _build(name, args.rule, clip, data, workload, concrete=concrete)
                except Unavailable as exc:
                    print(f"skipped {key}: {exc}")
    if not steps:
        raise SystemExit("no implementation could run here")
    implementations = list(steps)
    probes = {}
    if args.with_probe:
        # float32-equivalent elements: the probe moves the step's parameter bytes
        n = workload.n_elements * DTYPES[workload.dtype].itemsize // 4
        for name in PAIRED_PROBES:
            try:
                steps[name] = _build_probe(name, n)
                probes[name] = PROBE_BYTES_PER_ELEMENT * n
            except Unavailable as exc:
                print(f"skipped {name}: {exc}")
    times = time_rounds(steps, args.rounds, args.reps, seed=args.seed)
    impl_times = {name: times[name] for name in implementations}
    rows = summarize(impl_times, workload.steps_per_call)
    step_bytes = workload.bytes_per_step(args.rule)
    for r in rows:
        r["gbps"] = step_bytes / r["median_s"] / 1e9
    if probes:
        per_call = {name: step_bytes * workload.steps_per_call for name in implementations}
        fractions = probe_fractions(times, per_call, probes)
        for r in rows:
            r["probe_fraction"] = fractions[r["name"]]
    base = rows[0]["name"]
    print(
        f"{args.rule}{' ' + args.clip if args.clip else ''} {workload.name}: {args.rounds} rounds x {args.reps} "
        f"calls, {workload.steps_per_call} step(s) per call, interleaved"
    )
    head, rule = f"| implementation | ms/step (median) | ms/step (min) | x {base} |", "|---|---:|---:|---:|"
    print(head + " GB/s | % probe |\n" + rule + "---:|---:|" if probes else head + "\n" + rule)
    for r in rows:
        cells = f" {r['gbps']:.1f} | {r['probe_fraction']:.0%} |" if probes else ""
        print(f"| {r['name']} | {r['median_s'] * 1e3:.3f} | {r['min_s'] * 1e3:.3f} | {r['x_base']:.2f} |{cells}")
    for name, nbytes in probes.items():
        median = statistics.median(times[name])
        print(f"{name}: {median * 1e3:.3f} ms per pass, {nbytes / median / 1e9:.1f} GB/s (median of rounds)")
    clip_ratios = {}
    if args.with_unclipped:
        for name in names:
            for concrete in (False, True):
                clipped, unclipped = variant_name(name, concrete=concrete), variant_name(name, True, concrete)
                if clipped in steps and unclipped in steps:
                    clip_ratios[clipped] = ratio_of(times, clipped, unclipped)
                    print(f"{clipped}: {args.clip} / unclipped = {clip_ratios[clipped]:.3f}")
    if args.json:
        record = dict(
            rows=rows,
            clip_ratios=clip_ratios,
            rule=args.rule,
            workload=workload.name,
            steps_per_call=workload.steps_per_call,
            bytes_per_step=step_bytes,
            n_elements=workload.n_elements,
            probe_bytes=probes,
            times=times,
        )
        args.json.write_text(json.dumps(record, indent=1))
    return 0


def _build_probe(name: str, n: int):
    """A probe's pass over ``n`` float32 elements, checked once (as in the suites)."""
    a, b, c = probe_arrays(n)
    step = probe_step(name, a, b, c)
    before = a.copy()
    step()
    if not np.allclose(a, expected_after(name, before, b, c), rtol=1e-6):
        raise AssertionError(f"{name} did not compute its loop")
    return step


if __name__ == "__main__":
    sys.exit(main())

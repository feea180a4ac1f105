"""Tables of several rules at one workload from paired re-measurements (issue #20's rules by
default): per rule, ``python -m pyopt.benchmarks.paired RULE WORKLOAD IMPLS --processes K``
(the implementations interleaved round by round, in K fresh processes one after another;
``--with-probe`` on dense workloads), then per implementation the median over the processes
of its ms/step, its speedups over the Keras built-in, TF's fused op and torch (each a median of
per-round ratios within a process), its GB/s and its % of the bandwidth probe, with the spread
(least and greatest over the processes). With the probes, a second table bounds what any
implementation could gain on each reference: per round, the reference's time over the time
the step's bytes take at the best bandwidth of that round (the faster probe, or an
implementation that moved the step's bytes faster still).

    python -m pyopt.benchmarks.rule_tables dense_16M --processes 3 --json dense_16M.json
    python -m pyopt.benchmarks.rule_tables many_200x10K --rules adagrad,lion --rounds 6
    python -m pyopt.benchmarks.rule_tables embedding_1Mx64 --processes 3 --json embedding.json
    python -m pyopt.benchmarks.rule_tables --from-json dense_16M.json   # the tables again

GB/s counts the dense step's nominal bytes (``workloads.BYTES_PER_F32_ELEMENT``); the
Embedding's table has none (a lazy step moves the rows present only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The references a speedup is taken over, by implementation name.
REFERENCES = {"keras": "x Keras", "tf_raw": "x TF op", "torch": "x torch"}
DENSE_IMPLS = ("pyopt_op", "pyopt_keras", "pyopt_numpy", "keras", "tf_raw", "torch")
RULES = ("adagrad", "rmsprop", "rmsprop_cm", "adamax", "nadam", "lion", "adamw")


def default_impls(workload: str) -> tuple:
    from .workloads import EMBEDDING, EMBEDDING_IMPLS

    return EMBEDDING_IMPLS if workload == EMBEDDING.name else DENSE_IMPLS


def process_stats(run: dict) -> dict:
    """One process of ``paired --json`` (its ``times``: seconds per call per round): per
    implementation its median ms/step, its speedup over each reference present (median over
    rounds of reference time / its time), GB/s, and % probe where the run timed probes."""
    times, per_call = run["times"], run["steps_per_call"]
    probes = run.get("probe_bytes") or {}
    out = {}
    for row in run["rows"]:
        name = row["name"]
        ts = times[name]
        stats = dict(ms=statistics.median(ts) / per_call * 1e3, gbps=row.get("gbps"))
        for ref in REFERENCES:
            if ref in times and ref != name:
                stats[f"x_{ref}"] = statistics.median(r / t for r, t in zip(times[ref], ts, strict=True))
        if probes:
            stats["probe_fraction"] = row["probe_fraction"]
        out[name] = stats
    return out


def process_bounds(run: dict) -> dict:
    """One process with probes: the best bandwidth of each round (bytes/s: the faster probe or
    the fastest implementation), its median over rounds in GB/s, and per reference present the
    median over rounds of (its time) / (the step's bytes at that round's best bandwidth)."""
    times, probes = run["times"], run["probe_bytes"]
    per_call = run["bytes_per_step"] * run["steps_per_call"]
    names = [row["name"] for row in run["rows"]]
    best = [
        max([probes[p] / times[p][r] for p in probes] + [per_call / times[n][r] for n in names])
        for r in range(len(times[names[0]]))
    ]
    out = dict(best_gbps=statistics.median(best) / 1e9)
    for ref in REFERENCES:
        if ref in times:
            out[f"bound_{ref}"] = statistics.median(t * b / per_call for t, b in zip(times[ref], best, strict=True))
    return out


def _spread(values: list) -> tuple:
    return statistics.median(values), min(values), max(values)


def combine_bounds(runs: list[dict]) -> dict:
    """:func:`process_bounds` per process, then (median, least, greatest) of each over them;
    bytes per element from the first run."""
    per_process = [process_bounds(run) for run in runs if run.get("probe_bytes")]
    if not per_process:
        return {}
    out = {k: _spread([p[k] for p in per_process]) for k in per_process[0] if all(k in p for p in per_process)}
    if runs[0].get("n_elements"):
        out["bytes_per_element"] = runs[0]["bytes_per_step"] / runs[0]["n_elements"]
    elif runs[0].get("rule"):  # a record written before paired kept n_elements: the float32 count
        from .workloads import BYTES_PER_F32_ELEMENT

        out["bytes_per_element"] = BYTES_PER_F32_ELEMENT[runs[0]["rule"]]
    return out


def combine(runs: list[dict]) -> dict:
    """Per implementation (in the first run's order) and per statistic: (median, least,
    greatest) over the processes that ran it."""
    per_process = [process_stats(run) for run in runs]
    out = {}
    for name in per_process[0]:
        found = [p[name] for p in per_process if name in p]
        keys = [k for k in found[0] if all(f.get(k) is not None for f in found)]
        out[name] = {k: _spread([f[k] for f in found]) for k in keys}
        out[name]["processes"] = len(found)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _cell(stat, percent: bool = False, spread: bool = True) -> str:
    if stat is None:
        return ""
    median, low, high = stat
    if percent:
        return f"{median:.0%}" + (f" ({low:.0%}-{high:.0%})" if spread else "")
    return _fmt(median) + (f" ({_fmt(low)}-{_fmt(high)})" if spread else "")


def table(results: dict, gbps: bool = True) -> str:
    """Markdown: one row per rule and implementation; ratios and % probe as median (least-greatest)."""
    head = ["rule", "implementation", "ms/step", *REFERENCES.values()] + (["GB/s", "% probe"] if gbps else [])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for rule, stats in results.items():
        for name, s in stats.items():
            cells = [rule, name, _cell(s.get("ms"), spread=False)]
            cells += [_cell(s.get(f"x_{ref}")) for ref in REFERENCES]
            if gbps:
                cells += [_cell(s.get("gbps"), spread=False), _cell(s.get("probe_fraction"), percent=True)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bounds_table(bounds: dict) -> str:
    """Markdown: per rule, bytes per element, the best GB/s seen and the bound over each reference."""
    head = ["rule", "bytes/element", "best GB/s", *(f"bound {v}" for v in REFERENCES.values())]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for rule, b in bounds.items():
        per = b.get("bytes_per_element")
        cells = [rule, "" if per is None else f"{per:g}", _cell(b.get("best_gbps"))]
        cells += [_cell(b.get(f"bound_{ref}")) for ref in REFERENCES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(record: dict) -> str:
    """The table of a ``--json`` record ({"workload", "sparse", "rules": {rule: [runs]}})."""
    results = {rule: combine(runs) for rule, runs in record["rules"].items() if runs}
    processes = max((len(runs) for runs in record["rules"].values()), default=0)
    intro = (
        f"{record['workload']}: per implementation the median over {processes} processes of ms/step (each the "
        "median of its rounds); speedups and % probe: median (least-greatest) over the processes of each "
        "process's median of per-round ratios."
    )
    text = intro + "\n\n" + table(results, gbps=not record.get("sparse"))
    bounds = {rule: combine_bounds(runs) for rule, runs in record["rules"].items() if runs}
    bounds = {rule: b for rule, b in bounds.items() if b}
    if bounds:
        text += (
            "\n\nBounds: per round, the reference's time over the time the step's bytes take at the round's best "
            "bandwidth (the faster probe or the fastest implementation); median (least-greatest) over the "
            "processes of each process's median.\n\n" + bounds_table(bounds)
        )
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("workload", nargs="?", help="a workload of the suites: dense_16M, many_200x10K, embedding_1Mx64")
    p.add_argument("--rules", default=",".join(RULES), help="comma-separated rules (short names)")
    p.add_argument("--impls", default=None, help="comma-separated implementations, the first the base of paired")
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="write every process's rounds here")
    p.add_argument("--from-json", type=Path, default=None, help="print the tables of an earlier --json")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        print(render(json.loads(args.from_json.read_text())))
        return 0
    if not args.workload:
        raise SystemExit("a workload is needed (or --from-json)")
    from .paired import workloads

    known = workloads()
    if args.workload not in known:
        raise SystemExit(f"unknown workload {args.workload!r}; one of: {', '.join(sorted(known))}")
    sparse = known[args.workload].sparse
    impls = args.impls or ",".join(default_impls(args.workload))
    record = dict(workload=args.workload, sparse=sparse, rules={})
    with tempfile.TemporaryDirectory() as tmp:
        for rule in [r for r in args.rules.split(",") if r]:
            out = Path(tmp) / f"{rule}.json"
            cmd = [sys.executable, "-m", "pyopt.benchmarks.paired", rule, args.workload, impls]
            cmd += ["--processes", str(args.processes), "--rounds", str(args.rounds), "--reps", str(args.reps)]
            cmd += ["--json", str(out)] + ([] if sparse else ["--with-probe"])
            print(f"=== {rule} {args.workload}", flush=True)
            status = subprocess.call(cmd)
            if status != 0:
                print(f"{rule}: paired exited with status {status}; left out", file=sys.stderr)
                continue
            written = json.loads(out.read_text())
            runs = written.get("runs", [written])  # one process: its own record
            record["rules"][rule] = runs
            if args.json:  # after each rule: a long run that stops leaves what it measured
                args.json.write_text(json.dumps(record))
    print()
    print(render(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pyopt.benchmarks.paired: round-by-round interleaved timing and its ratios, on a fake clock, then
end to end on the NumPy implementations of a small case; the bandwidth probes in the rounds;
the tables of pyopt.benchmarks.rule_tables."""

from __future__ import annotations

import statistics

import pytest

from pyopt.benchmarks import paired


class FakeClock:
    """time advances only when a step runs: step `name` costs cost[name][round]."""

    def __init__(self, costs):
        self.now, self.costs, self.calls, self.order = 0.0, costs, {n: 0 for n in costs}, []

    def __call__(self):
        return self.now

    def step(self, name, reps):
        def run():
            self.order.append(name)
            self.now += self.costs[name][self.calls[name] // reps]
            self.calls[name] += 1

        return run


def test_rounds_rotate_and_time_each_call():
    costs = {"a": [1.0, 2.0, 4.0], "b": [3.0, 3.0, 3.0], "c": [0.5, 0.5, 8.0]}
    clock = FakeClock(costs)
    times = paired.time_rounds({n: clock.step(n, 2) for n in costs}, rounds=3, reps=2, clock=clock)
    assert times == costs  # seconds per call, one entry per round
    firsts = clock.order[::6]  # 3 names x 2 reps per round
    assert firsts == ["a", "b", "c"]  # round r starts at name r


def test_every_name_leads_once_per_block_and_successors_vary():
    names = ["a", "b", "c", "d"]
    orders = paired.round_orders(names, rounds=16)
    assert orders[:4] == [["a", "b", "c", "d"], ["b", "c", "d", "a"], ["c", "d", "a", "b"], ["d", "a", "b", "c"]]
    for block in range(4):
        rounds = orders[4 * block : 4 * block + 4]
        assert sorted(o[0] for o in rounds) == names  # each name leads once per block
        assert all(sorted(o) == names for o in rounds)  # each name runs once per round
    # With a fixed cyclic order "b" would always run right after "a"; shuffled blocks give it
    # other predecessors.
    before_b = {o[o.index("b") - 1] for o in orders if o.index("b") > 0}
    assert len(before_b) > 1
    assert paired.round_orders(names, rounds=16) == orders  # seeded: the same every run


def test_summary_uses_per_round_ratios():
    # Per round b/a is 2, 2, 0.5: the median of those (2) and the ratio of the medians (1) differ.
    times = {"a": [1.0, 10.0, 10.0], "b": [2.0, 20.0, 5.0]}
    rows = {r["name"]: r for r in paired.summarize(times, steps_per_call=10)}
    assert rows["a"]["x_base"] == 1.0
    assert rows["b"]["x_base"] == pytest.approx(0.5)  # median of a/b = 0.5, 0.5, 2
    assert rows["b"]["median_s"] == pytest.approx(0.5) and rows["b"]["min_s"] == pytest.approx(0.2)  # per step
    assert paired.ratio_of(times, "b", "a") == pytest.approx(2.0)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="rounds and reps must be >= 1"):
        paired.time_rounds({"a": lambda: None}, rounds=0, reps=1)


def test_end_to_end_numpy(capsys):
    assert (
        paired.main(
            [
                "adam",
                "dense_1K",
                "pyopt_numpy,numpy",
                "--clip",
                "clipnorm",
                "--with-unclipped",
                "--rounds",
                "2",
                "--reps",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| pyopt_numpy |" in out and "| numpy (unclipped) |" in out
    assert "pyopt_numpy: clipnorm / unclipped = " in out


def test_variant_names():
    assert paired.variant_name("pyopt_op") == "pyopt_op"
    assert paired.variant_name("pyopt_op", unclipped=True) == "pyopt_op (unclipped)"
    assert paired.variant_name("pyopt_op", concrete=True) == "pyopt_op (concrete)"
    assert paired.variant_name("pyopt_op", True, True) == "pyopt_op (unclipped, concrete)"


def test_end_to_end_concrete(capsys, monkeypatch, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    checked = []
    check = paired.check_runner

    def counting_check(data, rule, clip, name, runner, steps=1):
        checked.append((name, clip, type(runner.step).__name__))
        return check(data, rule, clip, name, runner, steps=steps)

    monkeypatch.setattr(paired, "check_runner", counting_check)
    out = tmp_path / "rows.json"
    assert (
        paired.main(
            [
                "adam",
                "dense_1K",
                "pyopt_numpy,keras",
                "--clip",
                "clipnorm",
                "--with-unclipped",
                "--with-concrete",
                "--rounds",
                "2",
                "--reps",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for row in (
        "keras",
        "keras (concrete)",
        "keras (unclipped)",
        "keras (unclipped, concrete)",
        "pyopt_numpy",
        "pyopt_numpy (unclipped)",
    ):
        assert f"| {row} |" in printed
    assert "pyopt_numpy (concrete)" not in printed and "skipped" not in printed  # NumPy has no graph
    assert "keras (concrete): clipnorm / unclipped = " in printed
    # every variant was checked against the reference after its first call, the concrete ones
    # through the ConcreteFunction itself
    assert sorted((str(c), t) for n, c, t in checked if n == "keras") == [
        (clip, kind) for clip in ("None", "clipnorm") for kind in ("ConcreteFunction", "Function")
    ]
    import json

    assert set(json.loads(out.read_text())["clip_ratios"]) == {"pyopt_numpy", "keras", "keras (concrete)"}


def test_unknown_names_are_refused():
    with pytest.raises(SystemExit, match="unknown workload 'dense_3M'"):
        paired.main(["adam", "dense_3M", "pyopt_numpy"])
    with pytest.raises(SystemExit, match=r"unknown implementation\(s\) \['nope'\]"):
        paired.main(["adam", "dense_1K", "pyopt_numpy,nope"])
    with pytest.raises(SystemExit, match="--with-unclipped needs --clip"):
        paired.main(["adam", "dense_1K", "pyopt_numpy", "--with-unclipped"])


def test_processes_are_combined_per_implementation():
    runs = [
        dict(rows=[dict(name="a", x_base=1.0, median_s=0.010), dict(name="b", x_base=1.5, median_s=0.007)]),
        dict(rows=[dict(name="a", x_base=1.0, median_s=0.014), dict(name="b", x_base=0.9, median_s=0.015)]),
        dict(rows=[dict(name="a", x_base=1.0, median_s=0.012), dict(name="b", x_base=1.2, median_s=0.010)]),
    ]
    rows = {r["name"]: r for r in paired.combine_processes(runs)}
    assert rows["b"]["x_base_per_process"] == [1.5, 0.9, 1.2]
    assert rows["b"]["x_base_median"] == pytest.approx(1.2)
    assert rows["a"]["median_s"] == pytest.approx(0.012) and rows["b"]["median_s"] == pytest.approx(0.010)
    # b could not run in the second process: its slot says so, the medians use the other two
    runs[1]["rows"].pop()
    rows = {r["name"]: r for r in paired.combine_processes(runs)}
    assert rows["b"]["x_base_per_process"] == [1.5, None, 1.2]
    assert rows["b"]["x_base_median"] == pytest.approx(1.35)
    runs[2]["rows"].reverse()  # the third process ran against b: its ratios are of another base
    with pytest.raises(ValueError, match="different bases"):
        paired.combine_processes(runs)


def test_child_arguments_drop_every_spelling_of_the_parent_options(tmp_path):
    out = tmp_path / "run1.json"
    argv = [
        "adam",
        "dense_1K",
        "numpy",
        "--processes",
        "3",
        "--rounds",
        "2",
        "--json=all.json",
        "--seed",
        "5",
        "--clip",
        "clipnorm",
    ]
    child = paired._child_argv(argv, 1, 5, out)
    assert child == [
        "adam",
        "dense_1K",
        "numpy",
        "--rounds",
        "2",
        "--clip",
        "clipnorm",
        "--processes",
        "1",
        "--seed",
        "6",
        "--json",
        str(out),
    ]
    child = paired._child_argv(["adam", "dense_1K", "numpy", "--processes=3", "--json", "x", "--seed=2"], 0, 2, out)
    assert child == ["adam", "dense_1K", "numpy", "--processes", "1", "--seed", "2", "--json", str(out)]
    # abbreviations are refused, so no spelling of --processes can reach a child unfiltered
    with pytest.raises(SystemExit):
        paired._parser().parse_args(["adam", "dense_1K", "numpy", "--proc", "3"])


def test_end_to_end_in_two_processes(capsys, tmp_path):
    out = tmp_path / "rows.json"
    assert (
        paired.main(
            [
                "adam",
                "dense_1K",
                "pyopt_numpy,numpy",
                "--rounds",
                "2",
                "--reps",
                "1",
                "--processes",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "over 2 processes" in printed
    import json

    combined = json.loads(out.read_text())
    rows = {r["name"]: r for r in combined["rows"]}
    assert len(rows["numpy"]["x_base_per_process"]) == 2 and all(x > 0 for x in rows["numpy"]["x_base_per_process"])
    assert combined["clip_ratios_per_process"] == [{}, {}]
    with pytest.raises(SystemExit, match="--processes must be >= 1"):
        paired.main(["adam", "dense_1K", "numpy", "--processes", "0"])


def test_probe_fractions_per_round():
    # "a" moves 100 bytes a call, each probe 50: per round a's rate over the faster probe's
    times = {"a": [1.0, 2.0, 4.0], "p1": [1.0, 1.0, 1.0], "p2": [2.0, 0.5, 2.0]}
    # round 0: 100/1 over max(50/1, 50/2) = 2; round 1: 50 over 100 = 0.5; round 2: 25 over 50 = 0.5
    assert paired.probe_fractions(times, {"a": 100.0}, {"p1": 50.0, "p2": 50.0}) == {"a": 0.5}


def test_end_to_end_with_probe(capsys, tmp_path):
    import json

    out = tmp_path / "rows.json"
    argv = ["adagrad", "dense_1K", "pyopt_numpy", "--with-probe", "--rounds", "3", "--reps", "2", "--json", str(out)]
    assert paired.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| implementation | ms/step (median) | ms/step (min) | x pyopt_numpy | GB/s | % probe |" in printed
    record = json.loads(out.read_text())
    assert record["bytes_per_step"] == 20 * 1024 and record["steps_per_call"] == 1  # p, g, accumulator
    assert set(record["probe_bytes"]) <= set(paired.PAIRED_PROBES) and "probe_rmw_mt" in record["probe_bytes"]
    assert all(b == 12 * 1024 for b in record["probe_bytes"].values())
    (row,) = record["rows"]
    times = record["times"]
    assert len(times["pyopt_numpy"]) == 3 and set(times) == {"pyopt_numpy", *record["probe_bytes"]}
    assert row["gbps"] == pytest.approx(20 * 1024 / row["median_s"] / 1e9)
    expected = paired.probe_fractions(times, {"pyopt_numpy": 20 * 1024}, record["probe_bytes"])
    assert row["probe_fraction"] == pytest.approx(expected["pyopt_numpy"])
    assert f"| {row['probe_fraction']:.0%} |" in printed


def _run(times, rows=None, steps_per_call=1, probe=True):
    rows = rows or [dict(name=n, gbps=1.0 / statistics.median(t), probe_fraction=0.5) for n, t in times.items()]
    return dict(times=times, rows=rows, steps_per_call=steps_per_call, probe_bytes={"probe_triad": 12} if probe else {})


def test_rule_tables_ratios_per_process_then_over_processes():
    from pyopt.benchmarks import rule_tables

    run = _run({"pyopt_op": [1.0, 2.0], "keras": [10.0, 10.0], "tf_raw": [2.0, 3.0]})
    stats = rule_tables.process_stats(run)
    assert stats["pyopt_op"]["ms"] == pytest.approx(1500.0)
    assert stats["pyopt_op"]["x_keras"] == pytest.approx(7.5)  # median of 10/1 and 10/2
    assert stats["pyopt_op"]["x_tf_raw"] == pytest.approx(1.75)  # median of 2/1 and 3/2
    assert "x_torch" not in stats["pyopt_op"] and "x_keras" not in stats["keras"]
    assert stats["keras"]["x_tf_raw"] == pytest.approx(0.25)
    looped = rule_tables.process_stats(_run({"pyopt_op": [1.0, 3.0]}, steps_per_call=10))
    assert looped["pyopt_op"]["ms"] == pytest.approx(200.0)  # per step
    runs = [
        _run({"pyopt_op": [1.0], "keras": [6.0]}),
        _run({"pyopt_op": [1.0], "keras": [4.0]}),
        _run({"pyopt_op": [2.0], "keras": [20.0]}),
    ]
    combined = rule_tables.combine(runs)
    assert combined["pyopt_op"]["x_keras"] == (6.0, 4.0, 10.0)  # median, least, greatest
    assert combined["pyopt_op"]["ms"] == (1000.0, 1000.0, 2000.0) and combined["pyopt_op"]["processes"] == 3
    lines = rule_tables.table({"adagrad": combined}).splitlines()
    assert lines[0] == "| rule | implementation | ms/step | x Keras | x TF op | x torch | GB/s | % probe |"
    assert lines[2] == "| adagrad | pyopt_op | 1000 | 6 (4-10) |  |  | 1 | 50% (50%-50%) |"
    no_gbps = rule_tables.table({"adagrad": combined}, gbps=False).splitlines()
    assert no_gbps[2] == "| adagrad | pyopt_op | 1000 | 6 (4-10) |  |  |"


def test_rule_tables_end_to_end_and_from_json(capsys, tmp_path):
    import json

    from pyopt.benchmarks import rule_tables

    out = tmp_path / "lion.json"
    argv = ["dense_1K", "--rules", "lion,adagrad", "--impls", "pyopt_numpy", "--processes", "1", "--rounds", "2"]
    assert rule_tables.main(argv + ["--reps", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["workload"] == "dense_1K" and not record["sparse"] and list(record["rules"]) == ["lion", "adagrad"]
    assert [len(runs) for runs in record["rules"].values()] == [1, 1]
    table = rule_tables.render(record)
    assert "| lion | pyopt_numpy |" in table and "| adagrad | pyopt_numpy |" in table and table in printed
    assert rule_tables.main(["--from-json", str(out)]) == 0
    assert capsys.readouterr().out.strip() == table
    with pytest.raises(SystemExit, match="unknown workload"):
        rule_tables.main(["dense_3M"])


def test_rule_tables_bounds_use_the_best_bandwidth_of_each_round():
    from pyopt.benchmarks import rule_tables

    # 100 bytes a step; the probe moves 60 bytes a pass. Round 0: probe 60/1 = 60 B/s, numpy
    # 100/2 = 50: best 60, Keras's 10 s over 100/60 s = 6. Round 1: numpy 100/1 beats the probe's
    # 60/2: best 100, Keras's 20 s over 1 s = 20.
    times = {"pyopt_numpy": [2.0, 1.0], "keras": [10.0, 20.0], "probe_triad": [1.0, 2.0]}
    run = dict(
        times=times,
        rows=[dict(name="pyopt_numpy"), dict(name="keras")],
        steps_per_call=1,
        bytes_per_step=100,
        n_elements=5,
        probe_bytes={"probe_triad": 60},
    )
    bounds = rule_tables.process_bounds(run)
    assert bounds["bound_keras"] == pytest.approx(13.0)  # median of 6 and 20
    assert bounds["best_gbps"] == pytest.approx(80e-9) and "bound_tf_raw" not in bounds
    combined = rule_tables.combine_bounds([run, run])
    assert combined["bound_keras"] == pytest.approx((13.0, 13.0, 13.0)) and combined["bytes_per_element"] == 20
    table = rule_tables.bounds_table({"adagrad": combined}).splitlines()
    assert table[0] == "| rule | bytes/element | best GB/s | bound x Keras | bound x TF op | bound x torch |"
    assert table[2].startswith("| adagrad | 20 | 8e-08 (8e-08-8e-08) | 13 (13-13) |")
    assert rule_tables.combine_bounds([dict(run, probe_bytes={})]) == {}  # no probes, no bounds

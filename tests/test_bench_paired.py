"""pyopt.benchmarks.paired: round-by-round interleaved timing and its ratios, on a fake clock, then
end to end on the NumPy implementations of a small case."""

from __future__ import annotations

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

"""pyopt.benchmarks.dispatch_gap: per-pause medians on fake clocks, argument checks, and one real run."""

from __future__ import annotations

import pytest

from pyopt.benchmarks import dispatch_gap as gap


class Clocks:
    """Wall and CPU time advance only in pause() and call(); a call costs more after a longer
    pause (as TF's does), and the k-th call of each pause gets an extra k * 1e-6 s."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.last_pause = 0.0
        self.k = 0

    def pause(self, s):
        self.wall += s
        self.last_pause = s

    def call(self):
        cost = 1e-3 + 0.1 * self.last_pause + self.k * 1e-6
        self.wall += cost
        self.cpu += cost / 2
        self.k += 1


def test_medians_per_pause():
    c = Clocks()
    pauses = [0.0, 0.004, 0.008]

    def call():
        c.call()

    rows = gap.time_after_pauses(call, pauses, calls=5, pause=c.pause, clock=lambda: c.wall, cpu_clock=lambda: c.cpu)
    assert [r["pause_s"] for r in rows] == pauses
    for i, (r, p) in enumerate(zip(rows, pauses)):
        extra = (5 * i + 2) * 1e-6  # the median of the 5 calls of this pause: k = 5i+2
        assert r["wall_s"] == pytest.approx(1e-3 + 0.1 * p + extra)
        assert r["cpu_s"] == pytest.approx((1e-3 + 0.1 * p + extra) / 2)
    assert c.wall == pytest.approx(
        sum(5 * p for p in pauses)
        + sum(1e-3 + 0.1 * p + (5 * i + j) * 1e-6 for i, p in enumerate(pauses) for j in range(5))
    )


def test_no_pause_call_for_zero():
    seen = []
    gap.time_after_pauses(lambda: None, [0.0], calls=3, pause=seen.append)
    assert seen == []


@pytest.mark.parametrize(
    "kwargs, match", [(dict(calls=0), "calls must be >= 1"), (dict(pauses=[-1.0]), "pauses must be >= 0")]
)
def test_bad_arguments(kwargs, match):
    args = dict(call=lambda: None, pauses=[0.0], calls=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gap.time_after_pauses(**args)


def test_busy_wait_waits():
    now = [0.0]

    def clock():
        now[0] += 0.001
        return now[0]

    gap.busy_wait(0.01, clock=clock)
    assert now[0] >= 0.011


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--pauses", "1,x"], "comma-separated numbers"),
        (["--pauses", "-1"], "--pauses must be >= 0"),
        (["--calls", "0"], "--calls must be >= 1"),
    ],
)
def test_bad_options_stop_before_tf_starts(monkeypatch, argv, match):
    monkeypatch.setattr(gap, "tiny_op_call", lambda: pytest.fail("TF was started before the options were checked"))
    with pytest.raises(SystemExit, match=match):
        gap.main(argv)


def test_end_to_end(capsys):
    pytest.importorskip("tensorflow")
    from pyopt import _loader

    if _loader._try_load() is None:
        pytest.skip(f"pyopt TF op library not loaded: {_loader.unavailable_reason()}")
    assert gap.main(["--pauses", "0,1", "--calls", "3", "--no-sleep"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert len(rows) == 2
    for line in rows:
        wall, cpu = (float(x) for x in line.strip("|").split("|")[1:3])
        assert wall > 0 and cpu >= 0

"""Property tests of pyopt.kernels (hypothesis): random valid calls match the reference,
random bad calls raise cleanly and write nothing, and a fuzz of aliasing, strides and
misaligned views never crashes the interpreter (run in a subprocess, so that a segfault
fails the test instead of killing pytest).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import DTYPES, call, call_multi, copies, random_state, same_bits
from test_kernels import assert_close

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Sizes that do and don't fill a vector (1..70), and a few around the chunk size (32768).
sizes = st.one_of(st.integers(0, 70), st.integers(71, 3000), st.sampled_from([32767, 32768, 32769, 65536 + 7]))
shapes = st.one_of(sizes.map(lambda n: (n,)), st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple))


RULES = list(ref.SLOTS)


@st.composite
def hyperparameters(draw, rule):
    unit = st.floats(0.0, 1.0)
    h = dict(lr=draw(st.one_of(st.just(0.0), st.floats(1e-6, 1.0))))
    if rule == "momentum":
        h.update(momentum=draw(unit), nesterov=draw(st.booleans()))
    if rule.startswith("adam") or rule in ("nadam", "adamax"):
        # beta_2 >= 0.5: v = v + (g*g - v)*(1 - beta_2) then cannot cancel to ~0 (with
        # beta_2 = 0 and g*g << v, float32 leaves an error ~eps*v that sqrt(v) turns into
        # sqrt(eps*v): no eps-based tolerance holds; Keras computes the same expression).
        # Adamax's u = max(b2*u, |g|) does not cancel: any beta_2 in [0, 1].
        h.update(
            beta_1=draw(st.floats(0.0, 0.999)),
            beta_2=draw(st.floats(0.0, 1.0) if rule == "adamax" else st.floats(0.5, 0.99999)),
            epsilon=draw(st.floats(1e-8, 1.0)),
            step=draw(st.integers(1, 10**6)),
        )
    if rule == "nadam":
        h["u_product"] = draw(st.floats(0.0, 0.999))
    if rule == "adagrad":
        h["epsilon"] = draw(st.floats(1e-8, 1.0))
    if rule.startswith("rmsprop"):
        # rho >= 0.5: the centered v - a*a (>= rho*(v_old - a_old**2) + rho*(1 - rho)*(a_old - g)**2)
        # then stays a fair fraction of v, as random_state makes it (with rho ~ 0 it is the
        # difference of two rounded g*g, an error no eps-based tolerance bounds; Keras's too).
        h.update(rho=draw(st.floats(0.5, 1.0)), epsilon=draw(st.floats(1e-8, 1.0)))
        if "momentum_buffer" in ref.SLOTS[rule]:
            h["momentum"] = draw(unit)
    if rule == "lion":
        h.update(beta_1=draw(st.floats(0.0, 1.0, exclude_min=True)), beta_2=draw(unit))
    return h


@st.composite
def valid_calls(draw):
    """(rule, dtype name, tensors, hyper, options, multi) of a valid call."""
    rule = draw(st.sampled_from(RULES))
    dtype = draw(st.sampled_from(list(DTYPES)))
    multi = draw(st.booleans())
    n = draw(st.integers(1, 4)) if multi else 1
    seed = draw(st.integers(0, 2**32 - 1))
    # float16 tops out at 65504: keep g*g (Adam's v) finite there.
    grad_scale = draw(st.floats(1e-2, 10.0) if dtype == "float16" else st.floats(1e-3, 1e3))
    rng = np.random.default_rng(seed)
    # slots that hold squares of the gradient scale as its square (RMSprop's velocity; not momentum's)
    squares = {"v", "vhat", "accumulator"} | ({"velocity"} if rule.startswith("rmsprop") else set())
    tensors = []
    for _ in range(n):
        p, g, s = random_state(rule, draw(shapes), np.float64, rng)
        s = [x * grad_scale**2 if name in squares else x * grad_scale for x, name in zip(s, ref.SLOTS[rule])]
        tensors.append([np.array(a, DTYPES[dtype]) for a in (p, g * grad_scale, *s)])  # 0-d stays an array
    hyper = draw(hyperparameters(rule))
    decay = st.one_of(st.just(0.0), st.floats(0.0, 0.5))
    options = dict(
        weight_decay=draw(st.lists(decay, min_size=n, max_size=n) if multi else decay),
        skip_nonfinite=draw(st.booleans()),
    )
    clip = draw(st.sampled_from([None, "clipnorm", "global_clipnorm"] if multi else [None, "clipnorm"]))
    if clip:
        options[clip] = draw(st.floats(1e-3, 1e3))
    return rule, dtype, tensors, hyper, options, multi


@SETTINGS
@given(valid_calls())
def test_random_valid_call_matches_reference(case):
    rule, dtype, tensors, hyper, options, multi = case
    before = copies(tensors)
    params, grads, slots = [t[0] for t in tensors], [t[1] for t in tensors], [t[2:] for t in tensors]
    if multi:
        assert call_multi(rule, params, grads, slots, **hyper, **options) is True
    else:
        assert call(rule, params[0], grads[0], slots[0], **hyper, **options) is True
    reference_options = {k: v for k, v in options.items() if k != "skip_nonfinite"}
    old_params, old_grads, old_slots = [t[0] for t in before], [t[1] for t in before], [t[2:] for t in before]
    # Lion: a sign tie of the reference follows the param the kernel wrote
    if multi:
        expected = ref.step_multi(rule, old_params, old_grads, old_slots, ties=params, **hyper, **reference_options)
    else:
        expected = [
            ref.step(rule, old_params[0], old_grads[0], old_slots[0], ties=params[0], **hyper, **reference_options)
        ]
    for t, (got, want, old) in enumerate(zip(tensors, expected, before)):
        assert same_bits(got[1], old[1]), "gradient written"
        extra = ref.param_operand_scale(rule, old[1], old[2:], want[1:], **hyper)
        for k, (x, y, o) in enumerate(zip([got[0], *got[2:]], want, [old[0], *old[2:]])):
            assert_close(x, y, o, dtype, "step", f"tensor {t} array {k}", scale=extra if k == 0 else 0.0)


# --------------------------------------------------------------------------- bad input


def _spoil(draw, rule, tensors, hyper, options, multi):
    """Changes one thing of a valid call; returns (description, exception type(s))."""
    t = len(tensors) - 1
    arrays = tensors[t]
    k = draw(st.integers(0, len(arrays) - 1))  # 0 param, 1 grad, 2.. slots
    what = draw(st.sampled_from(["dtype", "shape", "strided", "read-only", "alias", "list", "hyper"]))
    if what == "dtype":
        with np.errstate(invalid="ignore"):  # NaN/Inf values cast to an integer dtype
            arrays[k] = arrays[k].astype(
                draw(
                    st.sampled_from(
                        [
                            np.int32,
                            np.complex64,
                            object,
                            np.uint16,
                            np.float64 if arrays[k].dtype != np.float64 else np.float32,
                        ]
                    )
                )
            )
        return what, TypeError
    if what == "shape":
        if k == 0:
            k = 1
        arrays[k] = np.concatenate(
            [arrays[k].reshape(-1), arrays[k].reshape(-1)[:1] if arrays[k].size else np.zeros(1, arrays[k].dtype)]
        )
        return what, ValueError
    if what == "strided":
        base = np.repeat(arrays[k].reshape(-1), 2)
        if base.size < 4:  # a 1-element strided view is contiguous: use a bigger array
            return _spoil_hyper(draw, rule, hyper, options)
        arrays[k] = base[::2].reshape(arrays[k].shape)
        return what, ValueError
    if what == "read-only":
        if k == 1:
            k = 0
        arrays[k].flags.writeable = False
        return what, ValueError
    if what == "alias":
        if len(arrays) < 2 or arrays[0].size == 0:
            return _spoil_hyper(draw, rule, hyper, options)
        j = draw(st.sampled_from([i for i in range(len(arrays)) if i != 0]))
        arrays[j] = arrays[0] if draw(st.booleans()) else arrays[0].view()
        return what, ValueError
    if what == "list":
        arrays[k] = arrays[k].tolist()
        return what, TypeError
    return _spoil_hyper(draw, rule, hyper, options)


def _spoil_hyper(draw, rule, hyper, options):
    names = list(hyper) + ["weight_decay", "clipnorm"]
    name = draw(st.sampled_from([n for n in names if n != "nesterov"]))
    bad = {
        "lr": [-1.0, float("nan"), float("inf")],
        "momentum": [-0.5, 1.5, float("nan")],
        "beta_1": [-0.1, 1.0, float("nan")],
        "beta_2": [1.0, 2.0, float("-inf")],
        "epsilon": [0.0, -1.0, float("nan")],
        "step": [0, -5],
        "rho": [-0.1, 1.5, float("nan")],
        "u_product": [1.0, -0.5, float("inf")],
        "weight_decay": [-0.1, float("nan"), float("inf")],
        "clipnorm": [0.0, -1.0, float("nan"), float("inf")],
    }[name]
    if rule == "lion" and name == "beta_1":  # (0, 1]
        bad = [0.0, -0.1, 1.5, float("nan")]
    elif rule in ("lion", "adamax") and name == "beta_2":  # [0, 1]
        bad = [-0.1, 2.0, float("-inf")]
    value = draw(st.sampled_from(bad))
    if name == "weight_decay" and isinstance(options["weight_decay"], list):
        options["weight_decay"] = [value] * len(options["weight_decay"])
    elif name in hyper:
        hyper[name] = value
    else:
        options.pop("global_clipnorm", None)
        options[name] = value
    return f"{name}={value}", ValueError


@SETTINGS
@given(valid_calls(), st.data())
def test_random_bad_call_raises_and_writes_nothing(case, data):
    rule, dtype, tensors, hyper, options, multi = case
    what, exc = _spoil(data.draw, rule, tensors, hyper, options, multi)
    snapshot = [(a, a.copy()) for arrays in tensors for a in arrays if isinstance(a, np.ndarray)]
    params, grads, slots = [t[0] for t in tensors], [t[1] for t in tensors], [t[2:] for t in tensors]
    with pytest.raises(exc):
        if multi:
            call_multi(rule, params, grads, slots, **hyper, **options)
        else:
            call(rule, params[0], grads[0], slots[0], **hyper, **options)
    for a, b in snapshot:
        assert same_bits(a, b), f"array written by a call that raised ({what})"


# --------------------------------------------------------------------------- crash fuzz (subprocess)

FUZZ = textwrap.dedent(
    r"""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    import reference as ref
    from kernel_cases import DTYPES, HYPER, call_multi

    rng = np.random.default_rng(int(sys.argv[1]))
    rules = list(ref.SLOTS)
    calls = raised = 0

    def view(buf, offset, n, dtype):
        # n elements of dtype from a byte offset of buf (possibly misaligned)
        return np.ndarray((n,), dtype, buffer=buf[offset:offset + n * dtype.itemsize].data)

    for it in range(300):
        rule = rules[rng.integers(len(rules))]
        dtype = list(DTYPES.values())[rng.integers(4)]
        buf = rng.standard_normal(2048).astype(np.float32).view(np.uint8).copy()  # 8192 bytes
        n = int(rng.integers(0, 40))
        ntensors = int(rng.integers(1, 3))
        # Valid arrays first: each in an 800-byte region of its own, from a random byte offset.
        lists = [[view(buf, 800 * (t * 5 + k) + int(rng.integers(0, 8)), n, dtype) for t in range(ntensors)]
                 for k in range(2 + len(ref.SLOTS[rule]))]
        for lst in lists:
            for a in lst:
                a[...] = rng.standard_normal(n).astype(dtype)
        # Then, mostly, one spoiled array: strided, reversed, resized, 2-d transposed, or
        # another view of the buffer overlapping some other array, or that array itself.
        k, t = int(rng.integers(len(lists))), int(rng.integers(ntensors))
        a = lists[k][t]
        kind = rng.choice(["none", "strided", "reversed", "resized", "transposed", "overlap", "same"])
        if kind == "strided":
            a = view(buf, 800 * (t * 5 + k), 2 * n, dtype)[::2]
        elif kind == "reversed":
            a = a[::-1]
        elif kind == "resized":
            a = view(buf, 800 * (t * 5 + k), int(rng.integers(0, 41)), dtype)
        elif kind == "transposed" and n % 2 == 0:
            a = a.reshape(2, -1).T
        elif kind in ("overlap", "same"):
            k2, t2 = int(rng.integers(len(lists))), int(rng.integers(ntensors))
            other = lists[k2][t2]
            a = other if kind == "same" else view(buf, 800 * (t2 * 5 + k2) + int(rng.integers(0, 8 * max(n, 1))), n,
                                                  dtype)
        lists[k][t] = a
        before = buf.copy()
        kw = dict(HYPER[rule])
        if rng.random() < 0.3:
            kw["clipnorm"] = 1.0
        try:
            with np.errstate(all="ignore"):
                ok = call_multi(rule, lists[0], lists[1], [list(s) for s in zip(*lists[2:])] if len(lists) > 2
                                else None, **kw)
            calls += 1
            assert ok is True
            # It ran, so no written array (params, slots) may share memory with another one.
            written = [a for k, lst in enumerate(lists) if k != 1 for a in lst]
            everything = [a for lst in lists for a in lst]
            for w in written:
                if w.size:  # empty arrays hold no memory: passing one twice is harmless
                    sharing = [a for a in everything if a is not w and np.shares_memory(w, a)]
                    assert not sharing and sum(a is w for a in everything) == 1, f"overlap accepted ({kind})"
        except (TypeError, ValueError):
            raised += 1
            assert np.array_equal(buf, before), "buffer written by a call that raised"
    print(f"fuzz ok: {calls} calls ran, {raised} raised")
    """
)


@pytest.mark.parametrize("seed", range(4))
def test_aliasing_strides_fuzz_never_crashes(seed):
    """Random views of one buffer (overlapping, strided, reversed, misaligned, transposed):
    every call either runs or raises TypeError/ValueError without writing; no crash."""
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ, str(seed), tests_dir], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (
        f"fuzz seed {seed} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    )
    assert "fuzz ok" in proc.stdout


MISALIGNED = textwrap.dedent(
    r"""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import reference as ref
    from kernel_cases import DTYPES, HYPER, call, random_state

    # Arrays whose data pointer is not a multiple of the element size (byte offset 1..3).
    for name, dtype in DTYPES.items():
        for rule in ref.SLOTS:
            for n in (1, 7, 1023, 40000):
                for shift in (1, 2, 3):
                    arrays = random_state(rule, n, dtype, np.random.default_rng(n))
                    arrays = [arrays[0], arrays[1], *arrays[2]]
                    views = []
                    for a in arrays:
                        raw = np.zeros(a.nbytes + 8, np.uint8)[shift:shift + a.nbytes]
                        v = raw.view(dtype) if raw.ctypes.data % dtype.itemsize == 0 else np.ndarray(
                            a.shape, dtype, buffer=raw.data)
                        v[...] = a
                        views.append(v)
                    expected = ref.step(rule, arrays[0], arrays[1], arrays[2:], **HYPER[rule])
                    try:
                        assert call(rule, views[0], views[1], views[2:], **HYPER[rule]) is True
                    except (TypeError, ValueError) as e:
                        assert "align" in str(e), e
                        continue
                    for got, want in zip([views[0], *views[2:]], expected):
                        err = np.max(np.abs(got.astype(np.float64) - want), initial=0.0)
                        assert err <= 0.05 * max(1.0, np.max(np.abs(want))), (name, rule, n, shift, err)
    print("misaligned ok")
    """
)


def test_misaligned_arrays_never_crash():
    """Unaligned data pointers (possible with np.frombuffer / np.ndarray(buffer, offset)):
    a clean error naming alignment, or the correct result; never a crash."""
    proc = subprocess.run(
        [sys.executable, "-c", MISALIGNED, str(Path(__file__).parent)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "misaligned ok" in proc.stdout

"""Row-sparse (IndexedSlices-style) NumPy kernels against the float64 reference.

Dense-equivalent mode (default) must equal the dense step with the densified gradient
(duplicates summed: absent rows get g = 0, so their slots decay, RMSprop's momentum buffer
still moves them and Lion still steps them by sign(b1*m)); lazy mode must equal the dense
step on the rows present and leave every other row and its slots untouched.
"""

import numpy as np
import pytest
import reference
from kernel_cases import DTYPES, HYPER, call_sparse, random_state

from pyopt import kernels

# float32/float64: same maths as the dense kernels, compared with the float64 reference.
RTOL = {"float32": 2e-5, "float64": 1e-12, "float16": 4e-3, "bfloat16": 3e-2}


def _call(rule, param, values, indices, slots, **kw):
    return call_sparse(rule, param, values, indices, slots, **dict(HYPER[rule], **kw))


def _densify(values, indices, rows):
    dense = np.zeros((rows,) + values.shape[1:], np.float64)
    np.add.at(dense, indices, values.astype(np.float64))
    return dense


@pytest.mark.parametrize("rule", list(reference.SLOTS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("rows,width", [(1, 1), (17, 3), (300, 33)])
def test_sparse_matches_reference(rule, dtype, lazy, rows, width):
    rng = np.random.default_rng(rows * 1000 + width)
    param, _, slots = random_state(rule, (rows, width), DTYPES[dtype], rng)
    indices = rng.integers(0, rows, size=2 * rows + 1)  # duplicates guaranteed
    values = rng.standard_normal((indices.size, width)).astype(DTYPES[dtype])
    before = [param.copy(), *(s.copy() for s in slots)]
    kw = dict(clipnorm=0.5, weight_decay=0.01)
    assert _call(rule, param, values, indices, slots, lazy=lazy, **kw) is True

    dense_grad = _densify(values, indices, rows)
    touched = np.unique(indices)
    expect = [a.astype(np.float64) for a in before]
    if lazy:
        # The clip norm is the norm of the whole (densified) gradient, as in dense mode.
        scale = reference.clip_scale(np.sum(dense_grad**2), kw["clipnorm"])
        sub = reference.step(
            rule,
            before[0][touched],
            dense_grad[touched] * scale,
            [s[touched] for s in before[1:]],
            ties=param[touched],
            **dict(HYPER[rule], weight_decay=0.01),
        )
        for e, s in zip(expect, sub):
            e[touched] = s
    else:
        expect = list(reference.step(rule, before[0], dense_grad, before[1:], ties=param, **dict(HYPER[rule], **kw)))
    for got, want, old in zip([param, *slots], expect, before):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)
        if lazy:
            untouched = np.setdiff1d(np.arange(rows), touched)
            assert np.array_equal(got[untouched].view(np.uint8), old[untouched].view(np.uint8))


def test_duplicates_equal_presummed():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((5, 4)).astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    values = rng.standard_normal((3, 4))
    a, ma, va = p.copy(), m.copy(), v.copy()
    kernels.adam_sparse(a, values, np.array([2, 2, 4]), ma, va, lr=0.1, step=1)
    b, mb, vb = p.copy(), m.copy(), v.copy()
    kernels.adam_sparse(b, np.stack([values[0] + values[1], values[2]]), np.array([2, 4]), mb, vb, lr=0.1, step=1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [-1, 5, 2**40])
def test_out_of_range_index_raises_and_writes_nothing(bad):
    p = np.ones((5, 2), np.float32)
    vel = np.ones_like(p)
    with pytest.raises(ValueError, match=r"indices\[1\] = .* out of range \[0, 5\)"):
        kernels.momentum_sparse(p, np.ones((2, 2), np.float32), np.array([0, bad]), vel, lr=0.1, momentum=0.9)
    assert (p == 1).all() and (vel == 1).all()


@pytest.mark.parametrize(
    "values,indices,error,match",
    [
        (np.ones((2, 3), np.float32), np.array([0, 1]), ValueError, r"values\[0\] has shape"),
        (np.ones((3, 2), np.float32), np.array([0, 1]), ValueError, r"values\[0\].*indices\[0\] has 2 entries"),
        (np.ones((2, 2), np.float32), np.array([0.0, 1.0]), TypeError, r"indices\[0\] must be an integer array"),
        (np.ones((2, 2), np.float32), np.array([[0, 1]]), ValueError, r"indices\[0\] must be 1-D"),
        (np.ones((2, 2), np.float64), np.array([0, 1]), TypeError, r"values\[0\] has dtype float64"),
    ],
)
def test_bad_sparse_input(values, indices, error, match):
    p = np.zeros((4, 2), np.float32)
    with pytest.raises(error, match=match):
        kernels.gradient_descent_sparse(p, values, indices, lr=0.1)
    assert (p == 0).all()

"""Quantization numerics bit for bit against torch's x86 kernels and the NumPy reference.

Every case runs ≥ 10^5 near-tie inputs (values at k·s ± s/2 and 1–2 ulps around them, plus
exact multiples) per dtype and scheme, eagerly and under `jax.jit`, each function compiled once
(cases vmapped).
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from jaxopt_port import quantization as Q
from parity.reference import quantization as ref
from parity.run import quantization as run_quantization

torch = pytest.importorskip("torch")

N_CASES, PER_CASE = 8, 12_500  # 10^5 inputs per dtype / scheme
RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-1000, 1000)}


@pytest.fixture(scope="module", autouse=True)
def _x86_engine():
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation of quantized tensors
        yield
    torch.backends.quantized.engine = old


def cases(seed, dtype, per_channel=False):
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[dtype]
    scales = np.exp(rng.uniform(-9, 2, N_CASES)).astype(np.float32)
    zps = rng.integers(lo, hi + 1, N_CASES) if dtype != "qint8" else rng.integers(-20, 21, N_CASES)
    zps[0] = 0
    x = ref.near_ties(rng, scales[:, None], zps[:, None], lo, hi, (N_CASES, PER_CASE))
    return (x.T.copy() if per_channel else x), scales, zps


def assert_bits_equal(actual, desired):
    """Equal bit patterns (so -0.0 differs from 0.0), with numpy's report on failure."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.dtype == desired.dtype, (actual.dtype, desired.dtype)
    if actual.dtype.kind == "f":
        view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[actual.dtype.itemsize]
        if not np.array_equal(actual.view(view), desired.view(view)):
            np.testing.assert_array_equal(actual, desired)
            raise AssertionError("values equal but signs of zero differ")
    np.testing.assert_array_equal(actual, desired)


def naive(x, s, z, lo, hi):
    """What x / s gives: the formula torch does not compute."""
    return np.clip(np.rint(x / s + z), lo, hi)


@pytest.mark.parametrize("dtype", ["quint8", "qint8", "qint32"])
def test_quantize_per_tensor_bitwise(dtype):
    x, scales, zps = cases(1, dtype)
    tdtype = getattr(torch, dtype)
    want = np.stack(
        [
            torch.quantize_per_tensor(torch.from_numpy(r), float(s), int(z), tdtype)
            .int_repr()
            .numpy()
            for r, s, z in zip(x, scales, zps, strict=True)
        ]
    )
    f = jax.vmap(lambda r, s, z: Q.quantize_per_tensor(r, s, z, dtype))
    eager = np.asarray(f(x, scales, zps))
    jitted = np.asarray(jax.jit(f)(x, scales, zps))
    reference = np.stack(
        [ref.quantize_per_tensor(r, s, z, dtype) for r, s, z in zip(x, scales, zps, strict=True)]
    )
    assert eager.dtype == want.dtype
    assert_bits_equal(eager, want)
    assert_bits_equal(jitted, want)
    assert_bits_equal(reference, want)
    lo, hi = Q.calculate_qmin_qmax(None, None, dtype)
    wrong = sum(
        (naive(r, s, z, lo, hi) != w).sum() for r, s, z, w in zip(x, scales, zps, want, strict=True)
    )
    assert wrong > 1000  # the inputs sit where the rounding path matters


@pytest.mark.parametrize("dtype", ["quint8", "qint8", "qint32"])
def test_quantize_per_channel_bitwise(dtype):
    x, scales, zps = cases(2, dtype, per_channel=True)  # channels on axis 1
    want = (
        torch.quantize_per_channel(
            torch.from_numpy(x),
            torch.from_numpy(scales.astype(np.float64)),
            torch.from_numpy(zps),
            1,
            getattr(torch, dtype),
        )
        .int_repr()
        .numpy()
    )
    f = lambda x, s, z: Q.quantize_per_channel(x, s, z, 1, dtype)
    assert_bits_equal(np.asarray(f(x, scales, zps)), want)
    assert_bits_equal(np.asarray(jax.jit(f)(x, scales, zps)), want)
    assert_bits_equal(ref.quantize_per_channel(x, scales, zps, 1, dtype), want)
    # The single-rounding (per-tensor 8-bit) formula differs from torch here: two paths.
    r = ref.reciprocal32(scales)
    fused = np.clip(np.rint(ref.fma32(x, r, zps.astype(np.float32))), *ref.DTYPE_RANGES[dtype])
    assert (fused != want).sum() > 100


@pytest.mark.parametrize("dtype", ["quint8", "qint8", "qint32"])
def test_dequantize_bitwise(dtype):
    rng = np.random.default_rng(3)
    lo, hi = ref.DTYPE_RANGES[dtype]
    q = rng.integers(max(lo, -(2**20)), min(hi, 2**20) + 1, (N_CASES, PER_CASE)).astype(
        ref.STORAGE[dtype]
    )
    scales = np.exp(rng.uniform(-9, 2, N_CASES)).astype(np.float32)
    zps = rng.integers(0, 128, N_CASES)
    want = np.stack(
        [
            torch._make_per_tensor_quantized_tensor(torch.from_numpy(r), float(s), int(z))
            .dequantize()
            .numpy()
            for r, s, z in zip(q, scales, zps, strict=True)
        ]
    )
    f = jax.vmap(Q.dequantize)
    assert_bits_equal(np.asarray(f(q, scales, zps)), want)
    assert_bits_equal(np.asarray(jax.jit(f)(q, scales, zps)), want)
    per_channel = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(q.T.copy()),
        torch.from_numpy(scales.astype(np.float64)),
        torch.from_numpy(zps),
        1,
    )
    got = jax.jit(lambda q, s, z: Q.dequantize(q, s, z, axis=1))(q.T, scales, zps)
    assert_bits_equal(np.asarray(got), per_channel.dequantize().numpy())
    assert_bits_equal(ref.dequantize(q.T, scales, zps, axis=1), per_channel.dequantize().numpy())


FAKE_RANGES = [(0, 255), (-128, 127), (0, 127), (-64, 63), (0, 15)]


def _torch_fake_quant(x, s, z, qmin, qmax, g, axis=None):
    xt = torch.from_numpy(x).requires_grad_()
    if axis is None:
        y = torch.fake_quantize_per_tensor_affine(xt, float(s), int(z), qmin, qmax)
    else:
        y = torch.fake_quantize_per_channel_affine(
            xt, torch.from_numpy(s), torch.from_numpy(z.astype(np.int32)), axis, qmin, qmax
        )
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("qrange", FAKE_RANGES, ids=str)
def test_fake_quantize_per_tensor_values_and_gradients_bitwise(qrange):
    qmin, qmax = qrange
    rng = np.random.default_rng(qmin + 1000 * qmax)
    scales = np.exp(rng.uniform(-9, 2, N_CASES)).astype(np.float32)
    zps = rng.integers(qmin, qmax + 1, N_CASES)
    x = ref.near_ties(rng, scales[:, None], zps[:, None], qmin, qmax, (N_CASES, PER_CASE))
    g = rng.standard_normal(x.shape).astype(np.float32)
    want = [
        _torch_fake_quant(r, s, z, qmin, qmax, gr)
        for r, s, z, gr in zip(x, scales, zps, g, strict=True)
    ]
    want_y, want_dx = np.stack([w[0] for w in want]), np.stack([w[1] for w in want])

    def y_and_dx(r, s, z, gr):
        y, vjp = jax.vjp(lambda r: Q.fake_quantize_per_tensor_affine(r, s, z, qmin, qmax), r)
        return y, vjp(gr)[0]

    f = jax.vmap(y_and_dx)
    for y, dx in (f(x, scales, zps, g), jax.jit(f)(x, scales, zps, g)):
        assert_bits_equal(np.asarray(y), want_y)
        assert_bits_equal(np.asarray(dx), want_dx)
    ref_y, mask = ref.fake_quantize(x, scales[:, None], zps[:, None], qmin, qmax)
    assert_bits_equal(ref_y, want_y)
    assert_bits_equal(g * mask.astype(np.float32), want_dx)
    # The mask is on the rounded value: some inputs beyond the clamp bounds still pass gradient.
    outside = (x < (qmin - zps[:, None]) * scales[:, None]) | (
        x > (qmax - zps[:, None]) * scales[:, None]
    )
    assert np.any(outside & mask)


def test_fake_quantize_per_channel_values_and_gradients_bitwise():
    qmin, qmax = 0, 255
    rng = np.random.default_rng(5)
    scales = np.exp(rng.uniform(-9, 2, N_CASES)).astype(np.float32)
    zps = rng.integers(qmin, qmax + 1, N_CASES)
    x = ref.near_ties(rng, scales[:, None], zps[:, None], qmin, qmax, (N_CASES, PER_CASE)).T.copy()
    g = rng.standard_normal(x.shape).astype(np.float32)
    want_y, want_dx = _torch_fake_quant(x, scales, zps, qmin, qmax, g, axis=1)

    def y_and_dx(x, s, z, g):
        y, vjp = jax.vjp(lambda x: Q.fake_quantize_per_channel_affine(x, s, z, 1, qmin, qmax), x)
        return y, vjp(g)[0]

    for y, dx in (y_and_dx(x, scales, zps, g), jax.jit(y_and_dx)(x, scales, zps, g)):
        assert_bits_equal(np.asarray(y), want_y)
        assert_bits_equal(np.asarray(dx), want_dx)
    ref_y, mask = ref.fake_quantize(x, scales, zps, qmin, qmax, axis=1)
    assert_bits_equal(ref_y, want_y)
    assert_bits_equal(g * mask.astype(np.float32), want_dx)


def test_learnable_gradients_elementwise_bitwise():
    """One channel per element: torch's per-channel learnable op then returns each element's
    scale and zero-point gradient, so the element-wise formula is compared bit for bit."""
    qmin, qmax, gamma = 0, 255, 0.37
    rng = np.random.default_rng(6)
    n = 10**5
    scales = np.exp(rng.uniform(-9, 2, n)).astype(np.float32)
    zps = rng.uniform(qmin - 5, qmax + 5, n).astype(np.float32)
    zps[:1000] = np.rint(zps[:1000]) + 0.5  # ties: round half to even
    z_used = np.clip(np.rint(zps), qmin, qmax)
    x = ref.near_ties(rng, scales, z_used, qmin, qmax, n)[:, None]  # (n, 1): channels on axis 0
    # g·(x̂ − x) for |x| near the smallest normal is subnormal, which XLA flushes to zero.
    x = np.where(np.abs(x) < 1e-30, np.float32(0), x)
    g = rng.standard_normal(x.shape).astype(np.float32)
    xt, st, zt = (torch.from_numpy(v.copy()).requires_grad_() for v in (x, scales, zps))
    y = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, 0, qmin, qmax, gamma)
    y.backward(torch.from_numpy(g))

    def f(x, s, z):
        return Q.fake_quantize_learnable_per_channel_affine(x, s, z, 0, qmin, qmax, gamma)

    for fn in (f, jax.jit(f)):
        out, vjp = jax.vjp(fn, x, scales, zps)
        dx, ds, dz = vjp(g)
        assert_bits_equal(out, y.detach().numpy())
        assert_bits_equal(dx, xt.grad.numpy())
        assert_bits_equal(ds, st.grad.numpy())
        assert_bits_equal(dz, zt.grad.numpy())
    rdx, rds, rdz = ref.learnable_fake_quantize_grads(
        x[:, 0], g[:, 0], scales, z_used, qmin, qmax, gamma
    )
    assert_bits_equal(rdx, xt.grad.numpy()[:, 0])
    # torch sums each one-element channel from +0, which turns a -0 contribution into +0.
    assert_bits_equal(rds + np.float32(0), st.grad.numpy())
    assert_bits_equal(rdz + np.float32(0), zt.grad.numpy())


@pytest.mark.parametrize("zero_point", [2.5, 3.5, 2.3, -1.0, 300.0])
def test_learnable_per_tensor_zero_point_rounding_and_sums(zero_point):
    """Forward rounds the float zero point half to even, backward truncates z + 0.5 (torch's two
    rules); the summed gradients agree to float32 summation order."""
    qmin, qmax, gamma = 0, 255, 1.0
    rng = np.random.default_rng(7)
    s = np.float32(0.02)
    x = ref.near_ties(rng, s, 3, qmin, qmax, 20_000)
    g = rng.standard_normal(x.shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    st = torch.tensor([s], requires_grad=True)
    zt = torch.tensor([zero_point], requires_grad=True)
    y = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, qmin, qmax, gamma)
    y.backward(torch.from_numpy(g))
    f = jax.jit(
        lambda x, s, z: Q.fake_quantize_learnable_per_tensor_affine(x, s, z, qmin, qmax, gamma)
    )
    out, vjp = jax.vjp(f, x, np.array([s]), np.array([zero_point], np.float32))
    dx, ds, dz = vjp(g)
    assert_bits_equal(np.asarray(out), y.detach().numpy())
    assert_bits_equal(np.asarray(dx), xt.grad.numpy())
    z_fwd = np.clip(np.rint(np.float32(zero_point)), qmin, qmax)
    z_bwd = np.trunc(np.clip(np.float32(zero_point) + np.float32(0.5), qmin, qmax))
    assert_bits_equal(ref.fake_quantize(x, s, z_fwd, qmin, qmax)[0], y.detach().numpy())
    rdx, rds, rdz = ref.learnable_fake_quantize_grads(x, g, s, z_bwd, qmin, qmax, gamma)
    assert_bits_equal(rdx, xt.grad.numpy())
    # Both frameworks' float32 sums against the exact sum of the (bitwise equal) elements,
    # relative to the sum of magnitudes: measured 1.1e-8 worst over these five zero points.
    for got, terms in ((ds, rds), (st.grad, rds), (dz, rdz), (zt.grad, rdz)):
        exact = np.sum(terms, dtype=np.float64)
        assert abs(float(got[0]) - exact) <= 1e-7 * np.sum(np.abs(terms), dtype=np.float64)


def test_fake_quantize_errors_match_torch():
    x = np.zeros(3, np.float32)
    for args in [(0.1, 0, 5, 2), (0.1, 300, 0, 255)]:
        with pytest.raises(RuntimeError) as theirs:
            torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), *args)
        with pytest.raises(RuntimeError) as ours:
            Q.fake_quantize_per_tensor_affine(x, *args)
        assert str(ours.value).split(".")[0] in str(theirs.value).replace("\\\n", "").replace(
            "  ", ""
        )
    with pytest.raises(IndexError, match="Dimension out of range"):
        Q.quantize_per_channel(
            np.zeros((2, 3), np.float32), np.ones(3), np.zeros(3, int), 2, "qint8"
        )
    with pytest.raises(RuntimeError, match="length of scales"):
        Q.quantize_per_channel(
            np.zeros((2, 3), np.float32), np.ones(2), np.zeros(2, int), 1, "qint8"
        )
    with pytest.raises(ValueError, match="unsupported quantized dtype"):
        Q.quantize_per_tensor(x, 0.1, 0, "qint4")


def test_qmin_qmax_rules_match_torch():
    from torch.ao.quantization.utils import calculate_qmin_qmax

    for dtype in ("quint8", "qint8", "qint32"):
        for reduce_range in (False, True):
            for qrange in ((None, None), (0, 15), (-8, 7), (-3, 200)):
                custom = qrange[0] is not None
                if dtype == "qint8" and qrange == (-3, 200):
                    continue
                want = calculate_qmin_qmax(*qrange, custom, getattr(torch, dtype), reduce_range)
                assert Q.calculate_qmin_qmax(*qrange, dtype, reduce_range) == want
                assert ref.qmin_qmax(dtype, reduce_range, *qrange) == want
    with pytest.raises(AssertionError, match="must include 0"):
        Q.calculate_qmin_qmax(1, 5, "quint8")
    with pytest.raises(AssertionError, match="maximum bit range"):
        Q.calculate_qmin_qmax(-200, 100, "qint8")


def test_subnormal_inputs():
    """Subnormal inputs quantize to the zero point in both frameworks (XLA flushes them, torch
    rounds x·r, far below 1/2); only learnable-gradient contributions of order 1e-38 differ."""
    x = np.array([1e-45, -1e-45, 1e-40, -3e-39, 0.0], np.float32)
    for dtype in ("quint8", "qint8"):
        want = torch.quantize_per_tensor(torch.from_numpy(x), 0.01, 7, getattr(torch, dtype))
        assert_bits_equal(
            jax.jit(Q.quantize_per_tensor, static_argnums=3)(x, 0.01, 7, dtype),
            want.int_repr().numpy(),
        )
    want = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), 0.01, 7, 0, 255)
    np.testing.assert_array_equal(
        Q.fake_quantize_per_tensor_affine(x, 0.01, 7, 0, 255), want.numpy()
    )


def test_per_channel_float_zero_points_bitwise():
    """per_channel_affine_float_qparams (embeddings): float zero points, rint(fl(fl(x·r) + z))
    and (q − z)·s, on inputs placed at ties of x·r + z."""
    rng = np.random.default_rng(8)
    channels, n = 8, 12_500
    scales = np.exp(rng.uniform(-6, 0, channels)).astype(np.float32)
    zps = (rng.uniform(-5, 5, channels)).astype(np.float32)
    k = rng.integers(-3, 259, (n, channels))
    x = ((k + 0.5 - zps.astype(np.float64)) * scales).astype(np.float32)
    steps = rng.integers(-2, 3, x.shape)
    for i in (1, 2):
        x = np.where(steps >= i, np.nextafter(x, np.float32(np.inf)), x)
        x = np.where(steps <= -i, np.nextafter(x, np.float32(-np.inf)), x)
    qt = torch.quantize_per_channel(
        torch.from_numpy(x), torch.from_numpy(scales), torch.from_numpy(zps), 1, torch.quint8
    )
    f = jax.jit(lambda x, s, z: Q.quantize_per_channel(x, s, z, 1, "quint8"))
    q = np.asarray(f(x, scales, zps))
    assert_bits_equal(q, qt.int_repr().numpy())
    assert_bits_equal(ref.quantize_per_channel(x, scales, zps, 1, "quint8"), q)
    deq = jax.jit(lambda q, s, z: Q.dequantize(q, s, z, axis=1))(q, scales, zps)
    assert_bits_equal(deq, qt.dequantize().numpy())
    fused = np.clip(np.rint(ref.fma32(x, ref.reciprocal32(scales), zps)), 0, 255)
    assert (fused != q).sum() > 1000  # the two-rounding path is what torch computes here


def test_parity_rows_all_pass():
    """The rows the parity report shows (small sizes here; the report runs 10^5 per row)."""
    rows = run_quantization.run_quantization_parity(seed=1, cases=2, per_case=500)
    assert len(rows) == 18
    assert all(r["passed"] and r["mismatches"] == 0 for r in rows), [
        r for r in rows if not r["passed"]
    ]


def test_same_bits_with_x64_enabled():
    """The float32 formulas do not change when float64 is enabled (Python scalars, reductions and
    the host-side fbgemm rule included)."""
    x, scales, zps = cases(9, "quint8")
    x, s, z = x[0], scales[0], int(zps[0])
    want_q = torch.quantize_per_tensor(torch.from_numpy(x), float(s), z, torch.quint8).int_repr()
    want_y = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(s), z, 0, 255)
    with jax.enable_x64(True):
        q = jax.jit(lambda x: Q.quantize_per_tensor(x, float(s), z, "quint8"))(x)
        y = jax.jit(lambda x: Q.fake_quantize_per_tensor_affine(x, float(s), z, 0, 255))(x)
        scale, zp = jax.jit(lambda a, b: Q.calculate_qparams(a, b, 0, 255))(x.min(), x.max())
        fb = jax.jit(lambda a, b: Q.choose_quantization_params(a, b, 0, 255))(x.min(), x.max())
    assert_bits_equal(q, want_q.numpy())
    assert_bits_equal(y, want_y.numpy())
    obs = tq_minmax(x)
    assert_bits_equal(scale, obs[0])
    assert_bits_equal(zp, obs[1].astype(np.int32))
    assert (float(fb[0]), int(fb[1])) == torch._choose_qparams_per_tensor(
        torch.from_numpy(x), False
    )


def tq_minmax(x):
    from torch.ao.quantization import MinMaxObserver

    obs = MinMaxObserver()
    obs(torch.from_numpy(x))
    s, z = obs.calculate_qparams()
    return s.numpy(), z.numpy()

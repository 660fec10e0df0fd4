"""Observers and qparam rules against torch.ao.quantization: states, scales and zero points bit for
bit after sequences of batches (zero, constant, empty, one-signed and unobserved inputs)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from jaxopt_port import quantization as Q
from parity.reference import quantization as ref

torch = pytest.importorskip("torch")
tq = pytest.importorskip("torch.ao.quantization")


def _batches(rng, shape=(6, 5)):
    """A sequence that exercises every special case of the range rules."""
    normal = lambda scale=1.0, shift=0.0: (rng.standard_normal(shape) * scale + shift).astype(
        np.float32
    )
    return [
        np.zeros(shape, np.float32),  # all zero: scale = eps
        np.full(shape, 0.37, np.float32),  # constant: scale = c / 255
        normal(),
        np.zeros((0,), np.float32),  # empty: unchanged
        np.abs(normal(3.0)),  # positive only
        -np.abs(normal(1e-3)),  # negative only, tiny
        normal(50.0, 7.0),
        normal(1e-6),
    ]


# (torch class name, kwargs) — dtype/qscheme as torch objects are mapped by name.
CONFIGS = [
    ("MinMaxObserver", {}),
    ("MinMaxObserver", {"dtype": "qint8", "qscheme": "per_tensor_symmetric"}),
    ("MinMaxObserver", {"reduce_range": True}),
    ("MinMaxObserver", {"dtype": "qint8", "quant_min": -8, "quant_max": 7}),
    ("MinMaxObserver", {"quant_min": 0, "quant_max": 15, "qscheme": "per_tensor_symmetric"}),
    ("MinMaxObserver", {"dtype": "qint32"}),
    ("MovingAverageMinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {"averaging_constant": 0.3, "dtype": "qint8"}),
    ("MovingAverageMinMaxObserver", {"qscheme": "per_tensor_symmetric", "dtype": "qint8"}),
    ("PerChannelMinMaxObserver", {}),
    (
        "PerChannelMinMaxObserver",
        {"ch_axis": 1, "dtype": "qint8", "qscheme": "per_channel_symmetric"},
    ),
    ("PerChannelMinMaxObserver", {"qscheme": "per_channel_affine_float_qparams"}),
    ("MovingAveragePerChannelMinMaxObserver", {}),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {"ch_axis": 1, "averaging_constant": 0.5, "reduce_range": True},
    ),
]


def _torch_kwargs(kwargs):
    out = dict(kwargs)
    for key in ("dtype", "qscheme"):
        if key in out:
            out[key] = getattr(torch, out[key])
    return out


def _as_np(t):
    return t.detach().numpy()


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=lambda v: str(v))
def test_observer_sequence_bitwise(name, kwargs):
    rng = np.random.default_rng(len(name) + len(kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range and deprecation warnings, checked below
        theirs = getattr(tq, name)(**_torch_kwargs(kwargs))
        ours = getattr(Q, name)(**kwargs)
    per_channel = "PerChannel" in name
    ch_axis = kwargs.get("ch_axis", 0)
    c = kwargs.get("averaging_constant", 0.01) if "MovingAverage" in name else None
    state = ours.init(num_channels=(6, 5)[ch_axis]) if per_channel else ours.init()
    update = jax.jit(ours.update)
    calc = jax.jit(ours.calculate_qparams)
    r_min, r_max = (np.zeros(0, np.float32),) * 2 if per_channel else (np.inf, -np.inf)
    for x in _batches(rng):
        theirs(torch.from_numpy(x))
        if x.size:  # an empty batch is a shape change: eager, not compiled
            state = update(state, x)
        else:
            state = ours.update(state, x)
        r_min, r_max = ref.observe(r_min, r_max, x, c, ch_axis if per_channel else None)
        if theirs.min_val.numel() == 0:
            continue
        np.testing.assert_array_equal(np.asarray(state.min_val), _as_np(theirs.min_val))
        np.testing.assert_array_equal(np.asarray(state.max_val), _as_np(theirs.max_val))
        np.testing.assert_array_equal(np.asarray(r_min, np.float32), _as_np(theirs.min_val))
        np.testing.assert_array_equal(np.asarray(r_max, np.float32), _as_np(theirs.max_val))
        want_s, want_z = theirs.calculate_qparams()
        for s, z in (calc(state), ours.calculate_qparams(state)):
            np.testing.assert_array_equal(np.asarray(s), _as_np(want_s))
            np.testing.assert_array_equal(np.asarray(z), _as_np(want_z))
        rs, rz = ref.calculate_qparams(
            r_min,
            r_max,
            ours.quant_min,
            ours.quant_max,
            ours.qscheme,
            ours.dtype,
            custom=ours.has_customized_qrange,
        )
        np.testing.assert_array_equal(rs, _as_np(want_s))
        np.testing.assert_array_equal(rz, _as_np(want_z))


def test_calculate_qparams_many_ranges_bitwise():
    """10^4 random ranges (near-constant, tiny, huge, one-signed) in one compiled call per qscheme."""
    rng = np.random.default_rng(11)
    n = 10_000
    a = (rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))).astype(np.float32)
    b = (a + np.abs(rng.standard_normal(n)) * np.exp(rng.uniform(-30, 5, n))).astype(np.float32)
    b[:500] = a[:500]  # constant inputs
    for qscheme, dtype, qrange in [
        ("per_channel_affine", "quint8", (0, 255)),
        ("per_channel_affine", "quint8", (0, 127)),
        ("per_channel_symmetric", "qint8", (-128, 127)),
        ("per_channel_symmetric", "quint8", (0, 255)),
        ("per_channel_affine_float_qparams", "quint8", (0, 255)),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs = tq.PerChannelMinMaxObserver(
                qscheme=getattr(torch, qscheme), dtype=getattr(torch, dtype)
            )
        obs.min_val.resize_(n).copy_(torch.from_numpy(a))
        obs.max_val.resize_(n).copy_(torch.from_numpy(b))
        obs.quant_min, obs.quant_max = qrange
        want_s, want_z = obs.calculate_qparams()
        f = jax.jit(lambda a, b: Q.calculate_qparams(a, b, *qrange, qscheme, dtype))  # noqa: B023
        s, z = f(a, b)
        np.testing.assert_array_equal(np.asarray(s), _as_np(want_s))
        np.testing.assert_array_equal(np.asarray(z), _as_np(want_z))
        rs, rz = ref.calculate_qparams(a, b, *qrange, qscheme, dtype)
        np.testing.assert_array_equal(rs, _as_np(want_s))
        np.testing.assert_array_equal(rz, _as_np(want_z))


def test_unobserved_defaults_warn_like_torch():
    for name, kwargs in [("MinMaxObserver", {}), ("PerChannelMinMaxObserver", {})]:
        with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
            want = getattr(tq, name)(**kwargs).calculate_qparams()
        ours = getattr(Q, name)()
        with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
            got = ours.calculate_qparams(ours.init())
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(g), _as_np(w))


def test_choose_quantization_params_matches_aten():
    rng = np.random.default_rng(12)
    mins, maxs = [], []
    for t in range(400):
        x = (
            rng.standard_normal(16) * np.exp(rng.uniform(-15, 5)) + (t % 3 - 1) * rng.random()
        ).astype(np.float32)
        x = np.zeros(4, np.float32) if t % 50 == 0 else x
        mins.append(x.min())
        maxs.append(x.max())
        for reduce_range in (False, True):
            s, z = torch._choose_qparams_per_tensor(torch.from_numpy(x), reduce_range)
            got = Q.choose_quantization_params(x.min(), x.max(), 0, 255, reduce_range=reduce_range)
            assert (float(got[0]), int(got[1])) == (s, z)
            assert ref.choose_quantization_params(
                x.min(), x.max(), 0, 255, False, reduce_range
            ) == (s, z)
    # traced (host callback) inside jit, symmetric: as torch's fused moving-average fake-quant
    f = jax.jit(jax.vmap(lambda a, b: Q.choose_quantization_params(a, b, -128, 127, True)))
    scales, zps = f(np.array(mins), np.array(maxs))
    for a, b, s, z in zip(mins, maxs, np.asarray(scales), np.asarray(zps), strict=True):
        x = torch.tensor([a, b])
        sc, zp = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
        one = torch.tensor([1], dtype=torch.int32)
        torch.fused_moving_avg_obs_fake_quant(
            x,
            one,
            one,
            torch.tensor([np.inf]),
            torch.tensor([-np.inf]),
            sc,
            zp,
            0.01,
            -128,
            127,
            0,
            False,
            True,
        )
        assert (s, z) == (sc.item(), zp.item())


def test_observer_errors_and_warnings_match_torch():
    cases = [
        ("MinMaxObserver", {"qscheme": "per_channel_affine"}),
        ("MinMaxObserver", {"qscheme": "per_tensor_symmetric", "reduce_range": True}),
        ("PerChannelMinMaxObserver", {"qscheme": "per_tensor_affine"}),
        ("PerChannelMinMaxObserver", {"is_dynamic": True}),
        ("MovingAverageMinMaxObserver", {"is_dynamic": True}),
        ("MinMaxObserver", {"quant_min": 1, "quant_max": 5}),
        ("MinMaxObserver", {"quant_min": 0, "quant_max": 0}),
        ("MinMaxObserver", {"dtype": "qint8", "quant_min": -200, "quant_max": 100}),
        ("FixedQParamsObserver", {"scale": 0.1, "zero_point": 0, "is_dynamic": True}),
    ]
    for name, kwargs in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises((AssertionError, NotImplementedError)) as theirs:
                getattr(tq, name)(**_torch_kwargs(kwargs))
            with pytest.raises(theirs.type) as ours:
                getattr(Q, name)(**kwargs)
        assert " ".join(str(ours.value).split()) == " ".join(str(theirs.value).split())
    with pytest.warns(UserWarning, match="reduce_range will be deprecated"):
        Q.MinMaxObserver(reduce_range=True)
    with pytest.raises(AssertionError, match="should be less than max"):
        Q.calculate_qparams(2.0, 1.0, 0, 255)
    with pytest.raises(Exception, match="should not be called for PlaceholderObserver"):
        Q.PlaceholderObserver().calculate_qparams(())


def test_fixed_qparams_and_placeholder():
    theirs = tq.FixedQParamsObserver(1.0 / 128.0, 128, dtype=torch.quint8)
    ours = Q.FixedQParamsObserver(1.0 / 128.0, 128)
    state = jax.jit(ours.update)(ours.init(), np.ones(3, np.float32))
    for g, w in zip(ours.calculate_qparams(state), theirs.calculate_qparams(), strict=True):
        np.testing.assert_array_equal(np.asarray(g), _as_np(w))
    obs = Q.PlaceholderObserver.with_args(dtype="float16", is_dynamic=True)()
    assert (obs.dtype, obs.is_dynamic, obs.update(obs.init(), 1.0)) == ("float16", True, ())


HISTOGRAM_CONFIGS = [
    {"reduce_range": True},  # x86's default activation observer
    {
        "dtype": "qint8",
        "qscheme": "per_tensor_symmetric",
        "bins": 256,
        "quant_min": -8,
        "quant_max": 7,
    },
]


@pytest.mark.parametrize("kwargs", HISTOGRAM_CONFIGS, ids=str)
def test_histogram_observer_sequence(kwargs):
    """Histogram, range and the L2-searched qparams after each batch: zero and constant batches,
    a growing range (re-binning), an outlier, infinite values (ignored) and an empty batch."""
    rng = np.random.default_rng(len(kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tq.HistogramObserver(**_torch_kwargs(kwargs))
        ours = Q.HistogramObserver(**kwargs)
    state = ours.init()
    update, calc = jax.jit(ours.update), jax.jit(ours.calculate_qparams)
    batches = [
        np.zeros((8, 8), np.float32),
        np.full((8, 8), 0.5, np.float32),
        rng.standard_normal((64, 32)).astype(np.float32),
        (rng.standard_normal((64, 32)) * 3 + 1).astype(np.float32),
        np.concatenate([rng.standard_normal(500), [40.0, np.inf, -np.inf]]).astype(np.float32),
        np.zeros((0,), np.float32),
        (rng.standard_normal((64, 32)) * 0.1).astype(np.float32),
    ]
    for t, x in enumerate(batches):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.inf detected in input tensor
            theirs(torch.from_numpy(x))
        state = update(state, x) if x.size else ours.update(state, x)
        np.testing.assert_array_equal(np.asarray(state.histogram), _as_np(theirs.histogram))
        np.testing.assert_array_equal(np.asarray(state.min_val), _as_np(theirs.min_val))
        np.testing.assert_array_equal(np.asarray(state.max_val), _as_np(theirs.max_val))
        if t not in (1, 4, 6):  # torch's search is a slow Python loop: check three points
            continue
        want_s, want_z = theirs.calculate_qparams()
        s, z = calc(state)
        # Bit-equal in every case measured (torch mixes float64 scalars into its search; the
        # float32 search chose the same bins each time).
        np.testing.assert_array_equal(np.asarray(s), _as_np(want_s))
        np.testing.assert_array_equal(np.asarray(z), _as_np(want_z))

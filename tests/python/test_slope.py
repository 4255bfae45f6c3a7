"""`import slope` (python/): calls, NumPy without copies, gradients, errors, check."""
import os
import threading
import warnings

import numpy as np
import pytest

import slope


@pytest.fixture
def intro(samples):
    return slope.compile_file(os.path.join(samples, "autograd_intro.slope"))


def test_seed_examples(intro):
    # The tutorial every newcomer tries: 2x^2 + 3x + 1 at 2, and bowl at [[1, 2], [3, 4]].
    assert intro.function("quadratic")(2.0) == 15.0
    assert intro.gradient("quadratic")(2.0) == (15.0, 11.0)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    value, g = intro.gradient("bowl")(x)
    assert value == 54.0
    np.testing.assert_array_equal(g, [[4.0, 6.0], [8.0, 10.0]])
    assert intro.function("quadratic")(2) == 15.0  # an int converts exactly


def test_results_and_gradients_are_numpy(intro):
    A = np.arange(6.0).reshape(2, 3)
    v = np.array([1.0, -1.0, 2.0])
    y = intro.function("matvec")(A, v)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == (2,)
    np.testing.assert_allclose(y, A @ v)
    # VJP: cotangent u after the arguments; gives (A^T-free) dA = u v^T and dv = A^T u.
    u = np.array([0.5, 2.0])
    dA, dv = intro.vjp("matvec")(A, v, u)
    np.testing.assert_allclose(dA, np.outer(u, v))
    np.testing.assert_allclose(dv, A.T @ u)
    dv_only = intro.vjp("matvec", wrt=["v"])(A, v, u)
    np.testing.assert_allclose(dv_only, A.T @ u)


def test_inputs_are_not_copied_or_changed(intro):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    before = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", slope.CopyWarning)  # a copy would raise here
        intro.gradient("bowl")(x)
        intro.function("bowl")(x[:, :])  # a view of the same memory: still contiguous
    np.testing.assert_array_equal(x, before)


def test_other_arrays_are_copied_with_a_warning(intro):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.warns(slope.CopyWarning, match="not C-contiguous"):
        assert intro.function("bowl")(x.T) == 54.0
    with pytest.warns(slope.CopyWarning, match="dtype is int64"):
        assert intro.function("bowl")(np.array([[1, 2], [3, 4]])) == 54.0
    # A list is not an array: converted without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", slope.CopyWarning)
        assert intro.function("bowl")([[1, 2], [3, 4]]) == 54.0


def test_float32(samples):
    m = slope.compile("fn sq(x: f32[n]) -> f32 { sum(x * x) }")
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    value, g = m.gradient("sq")(x)
    assert value == 14.0
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, [2.0, 4.0, 6.0])


def test_compile_error_is_located():
    with pytest.raises(slope.CompileError) as e:
        slope.compile("fn f(x: f64) -> f64 {\n  x + y\n}", "bad.slope")
    assert "bad.slope:2:7: error: unknown name 'y'" in str(e.value)


def test_call_errors(intro):
    with pytest.raises(slope.CallError, match="takes 1 argument"):
        intro.function("bowl")(np.zeros((2, 2)), 1.0)
    with pytest.raises(slope.CallError, match="'A'"):
        intro.function("matvec")(np.zeros((2, 3)), np.zeros(4))  # m bound to 3 and to 4
    m = slope.compile("fn pick(x: f64[n], i: i64) -> f64 { x[i] }", "pick.slope")
    with pytest.raises(slope.CallError, match="pick.slope:1:"):
        m.function("pick")(np.zeros(3), 7)
    with pytest.raises(ValueError):
        intro.function("nope")
    with pytest.raises(ValueError, match="use vjp"):
        intro.gradient("matvec")


def test_check_report(intro):
    r = slope.check(intro, "bowl", np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert r["passed"] is True
    assert r["params"][0]["name"] == "x"
    assert r["params"][0]["checked"] == 4
    assert r["params"][0]["max_rel_err"] < 1e-6


def test_options(samples):
    path = os.path.join(samples, "loops.slope")
    plain = slope.compile_file(path)
    sqrt = slope.compile_file(path, checkpoint="sqrt", threads=1)
    interp = slope.compile_file(path, interpret=True)
    x = np.linspace(0.1, 0.9, 9)
    a, b, c = (m.gradient("cumsum")(x) for m in (plain, sqrt, interp))
    assert a[0] == pytest.approx(b[0]) == pytest.approx(c[0])
    np.testing.assert_allclose(a[1], b[1])
    np.testing.assert_allclose(a[1], c[1])
    with pytest.raises(ValueError):
        slope.compile_file(path, checkpoint="often")


def test_tiers(samples):
    # Tiered by default: level-0 code until optimize() (or enough calls); the same bits after.
    path = os.path.join(samples, "autograd_intro.slope")
    tiered = slope.compile_file(path)
    full = slope.compile_file(path, tiered=False)
    x = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    g = tiered.gradient("bowl")
    assert not g.optimized
    v0, g0 = g(x)
    g.optimize()
    assert g.optimized
    v1, g1 = g(x)
    assert full.gradient("bowl").optimized
    v2, g2 = full.gradient("bowl")(x)
    assert v0 == v1 == v2
    np.testing.assert_array_equal(g0, g1)
    np.testing.assert_array_equal(g0, g2)
    f = tiered.function("bowl")
    f.optimize()
    assert f.optimized and f(x) == v0


def test_gil_is_released(intro):
    # Eight threads calling one compiled gradient at once get the same numbers.
    x = np.random.default_rng(1).standard_normal((300, 300))
    want = intro.gradient("bowl")(x)
    got = [None] * 8

    def run(k):
        got[k] = intro.gradient("bowl")(x)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for v, g in got:
        assert v == want[0]
        np.testing.assert_array_equal(g, want[1])


def test_forward_mode(intro):
    # jvp: the arguments, then a tangent per float parameter; returns the value, then J v.
    assert intro.jvp("quadratic")(2.0, 1.0) == (15.0, 11.0)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert intro.jvp("bowl")(x, np.ones_like(x)) == (54.0, 28.0)
    # hvp: the value, the gradient, then H v.
    value, g, hv = intro.hvp("bowl")(x, np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert value == 54.0
    np.testing.assert_array_equal(g, [[4.0, 6.0], [8.0, 10.0]])
    np.testing.assert_array_equal(hv, [[2.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError):
        intro.hvp("matvec")


def test_dense_jacobian_and_hessian(intro):
    A = np.arange(6.0).reshape(2, 3)
    v = np.array([1.0, -1.0, 2.0])
    # matvec(A, v) = A v: d/dv is A itself, both ways.
    for mode in ("forward", "reverse", "auto"):
        J = intro.jacobian("matvec", wrt=["v"], mode=mode)(A, v)
        np.testing.assert_array_equal(J, A)
    H = intro.hessian("bowl")(np.ones((2, 2)))
    np.testing.assert_array_equal(H, 2 * np.eye(4))


def test_sparse_jacobian_and_hessian():
    m = slope.compile("""
fn diffs(x: f64[n]) -> f64[n - 1] {
    let d[i: n - 1] = x[i + 1]^2 - x[i];
    d
}
fn rosen(x: f64[n]) -> f64 {
    sum[i: n - 1](100 * (x[i + 1] - x[i]^2)^2 + (1 - x[i])^2)
}
""")
    x = np.array([1.0, 2.0, 3.0, 4.0])
    (data, indices, indptr), shape = m.jacobian("diffs").sparse(x)
    assert shape == (3, 4)
    np.testing.assert_array_equal(indptr, [0, 2, 4, 6])
    np.testing.assert_array_equal(indices, [0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(data, [-1.0, 4.0, -1.0, 6.0, -1.0, 8.0])
    dense = np.zeros(shape)
    for r in range(shape[0]):
        dense[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
    np.testing.assert_array_equal(dense, m.jacobian("diffs")(x))
    (hdata, hind, hptr), hshape = m.hessian("rosen").sparse(np.ones(5))
    assert hshape == (5, 5) and len(hdata) == 13  # tridiagonal

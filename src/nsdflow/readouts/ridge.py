"""Ridge regression with one regularisation per target, chosen in the basis of one decomposition.

With the centred design ``X = U diag(s) V'`` (an unpenalised intercept), every alpha's fit is a
rescaling of ``U'Y``, so a whole alpha grid for all targets costs one product ``U'Y`` plus
O(alphas x k x targets). The decomposition is chosen by shape (:func:`choose_method`):

* ``eig``: eigendecomposition of the p x p matrix ``X'X`` (float64), when images outnumber
  features at least twice (the usual case: 9,000 images x 512 features);
* ``gram``: eigendecomposition of the n x n Gram matrix ``XX'`` (float64), when features
  outnumber images;
* ``svd``: thin SVD of X (float32), in between.

Directions whose singular value is below ``s_max * max(n, p) * eps(float32)`` are dropped:
float32 data carry no information there. Three criteria pick each target's alpha:

* ``gcv``: generalised cross-validation, ``RSS / (n (1 - df/n)^2)``, read off ``U'Y`` without
  forming any residual (the fast default);
* ``loo``: exact leave-one-out error ``sum_i (e_i / (1 - h_ii))^2``, the criterion of
  scikit-learn's ``RidgeCV(alpha_per_target=True)`` (one n x targets residual per alpha);
* ``kfold``: squared error on K contiguous folds (as ``sklearn.model_selection.KFold``), from
  one cached decomposition per fold.

Everything runs in float32 with float64 where it matters (the small eigenproblems, the
criteria), on any backend of :mod:`.backend`. The decomposition is separate from the fit so
that one decomposition per subject and feature set serves every region job: with one alpha
per target, a region's fit is exactly a column slice of the whole hemisphere's fit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from .backend import NumpyBackend

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 7, 9))
CRITERIA = ("gcv", "loo", "kfold")
METHODS = ("auto", "svd", "eig", "gram")
_NP = NumpyBackend()
#: Bytes of float32 targets processed at once (bounds memory: a hemisphere is never copied whole).
#: gcv reads a block in place (no copy); loo and kfold copy it, centred, and form residuals of its size.
BLOCK_BYTES = {"gcv": 256 * 2**20, "loo": 128 * 2**20, "kfold": 64 * 2**20}
#: Columns of the strips in which gcv sums the squares of a block of targets, one strip per thread:
#: long contiguous reads of a row-major block, yet a strip's row and its float32 sums stay in the
#: L1 cache (2,000-4,000 columns ran 1.5x faster than 7,500 here).
SQ_STRIP = 4096
#: Above this |mean| / std of a target, U'Y is recomputed from centred targets (float32 rounding of
#: the uncentred product grows with the mean).
MEAN_TO_STD = 10.0


@dataclass
class Decomposition:
    """Decomposition of a centred design: ``X = U diag(s) V'``, directions by decreasing s."""

    U: np.ndarray  # (n, k) float32
    s: np.ndarray  # (k,) float64
    V: np.ndarray  # (p, k) float32
    method: str = "svd"
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.U.shape[0]


def choose_method(n: int, p: int) -> str:
    """``gram`` when features outnumber images, ``eig`` when images outnumber features twice, else ``svd``."""
    if p >= n:
        return "gram"
    if n >= 2 * p:
        return "eig"
    return "svd"


def standardize_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales of ``X`` (scale 1 for constant columns), float32."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    scale[scale < 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def _rows(n: int, width: int, budget: int = 64 * 2**20) -> int:
    """Rows of a float64 block of ``width`` columns that fit in ``budget`` bytes."""
    return max(1, budget // max(1, 8 * width))


def _xtx64(X, xp):
    """``X'X`` in float64, accumulated over row blocks (p x p); one thread when p is small (BLAS's
    syrk: 0.04 s on one core for 8,857 x 512, 0.02-0.25 s on two, depending on the other work)."""
    n, p = X.shape
    G = xp.zeros((p, p), xp.float64)
    step = _rows(n, p)
    with _one_thread_if_small(p, xp):
        for i in range(0, n, step):
            b = xp.cast(X[i:i + step], xp.float64)
            G += b.T @ b
    return G


def _xxt64(A, B, xp):
    """``A B'`` in float64, accumulated over column blocks (m x n)."""
    p = A.shape[1]
    K = xp.zeros((A.shape[0], B.shape[0]), xp.float64)
    step = _rows(max(A.shape[0], B.shape[0]), max(A.shape[0], B.shape[0]))
    for j in range(0, p, step):
        K += xp.cast(A[:, j:j + step], xp.float64) @ xp.cast(B[:, j:j + step], xp.float64).T
    return K


def _eigh(A, xp):
    """Symmetric eigendecomposition; single-threaded on numpy when small (LAPACK's threads gain
    nothing on a 512 x 512 matrix and stall for seconds when the cores are busy)."""
    with _one_thread_if_small(A.shape[0], xp):
        return xp.eigh(A)


def _one_thread_if_small(p: int, xp):
    """One BLAS thread on numpy for the p x p matrices of a decomposition with p <= 2048, whose
    multithreaded BLAS/LAPACK calls gain little and stall when another process holds a core."""
    if xp.name == "numpy" and p <= 2048:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    return nullcontext()


def _keep(s, n: int, p: int):
    """Directions carrying information in float32 data."""
    smax = float(s[0]) if len(s) else 0.0
    return s > smax * max(n, p) * np.finfo(np.float32).eps


def decompose(X, method: str = "auto", xp=None) -> Decomposition:
    """Decompose a centred design (see the module docstring for the methods).

    Parameters
    ----------
    X : (n, p) float32 array, centred (and usually standardised) columns
    method : {"auto", "svd", "eig", "gram"}
    xp : backend (default numpy)
    """
    xp = xp or _NP
    X = xp.asarray(X, xp.float32)
    n, p = X.shape
    if method not in METHODS:
        raise ValueError(f"unknown ridge decomposition {method!r}; valid: {', '.join(METHODS)}")
    method = choose_method(n, p) if method == "auto" else method
    if method == "svd":
        U, s, Vt = xp.svd(X)
        s = xp.cast(s, xp.float64)
        keep = _keep(xp.to_numpy(s), n, p)
        idx = np.flatnonzero(keep)
        return Decomposition(xp.take(U, idx, 1), xp.take(s, idx, 0), xp.take(Vt, idx, 0).T, method)
    if method == "eig":
        if n <= _rows(n, p):  # X fits one float64 block: cast it once for X'X and X V
            X = xp.cast(X, xp.float64)
        w, vecs = _eigh(_xtx64(X, xp), xp)
    else:
        w, vecs = _eigh(_xxt64(X, X, xp), xp)
    w, vecs = xp.flip(w, 0), xp.flip(vecs, 1)
    s = xp.sqrt(xp.maximum(w, 0.0))
    idx = np.flatnonzero(_keep(xp.to_numpy(s), n, p))
    s, vecs = xp.take(s, idx, 0), xp.take(vecs, idx, 1)
    if method == "eig":
        V = vecs
        V_s = V / s  # scaled before the product: one (rows, k) float64 block per step, not two
        U = xp.zeros((n, len(idx)), xp.float32)
        step = _rows(n, p)
        for i in range(0, n, step):
            U[i:i + step] = xp.cast(xp.cast(X[i:i + step], xp.float64) @ V_s, xp.float32)
        return Decomposition(U, s, xp.cast(V, xp.float32), method)
    U = vecs
    V = xp.zeros((p, len(idx)), xp.float32)
    step = _rows(n, n)
    for j in range(0, p, step):
        V[j:j + step] = xp.cast((xp.cast(X[:, j:j + step], xp.float64).T @ U) / s, xp.float32)
    return Decomposition(xp.cast(U, xp.float32), s, V, method)


def project(dec: Decomposition, X_new, xp=None):
    """Rows of a (centred with the fit's means) design on the right-singular vectors: ``X_new V``."""
    xp = xp or _NP
    return xp.asarray(X_new, xp.float32) @ xp.asarray(dec.V, xp.float32)


def kfold_rows(n: int, n_folds: int) -> list[np.ndarray]:
    """Held-out rows of each of ``n_folds`` contiguous folds, as ``sklearn.model_selection.KFold``."""
    if not 2 <= n_folds <= n:
        raise ValueError(f"ridge n_folds must be between 2 and the number of images ({n}), got {n_folds}")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_folds)]


# ----------------------------------------------------------------------------- criteria


def _spans_centred_space(k: int, n: int) -> bool:
    """True when U spans every centred direction (k = n - 1: more features than images).

    The part of Y outside U's span is then exactly zero, and computing it as ``Y - U U'Y``
    would only add float32 rounding that swamps the tiny residuals of small alphas.
    """
    return k >= n - 1


def gcv_errors(s: np.ndarray, UtY, y_sq, alphas, n: int, xp=None):
    """GCV criterion (alphas, targets), float64, for centred targets with squared norms ``y_sq``."""
    xp = xp or _NP
    s2 = xp.cast(xp.asarray(s), xp.float64) ** 2
    a = xp.asarray(np.asarray(alphas, dtype=np.float64), xp.float64)
    shrink = a[:, None] / (s2[None, :] + a[:, None])  # 1 - d, without cancellation
    if UtY.dtype == xp.float64:
        UtY2 = UtY * UtY
    else:  # squared in place in the float64 copy: one (k, targets) float64 array, not two
        UtY2 = xp.cast(UtY, xp.float64)
        UtY2 *= UtY2
    k = UtY.shape[0]
    if _spans_centred_space(k, n):
        rss = (shrink**2) @ UtY2
    else:  # the part of Y that no alpha can fit; ||U'y||^2 from the same product (a row of ones)
        weights = xp.zeros((len(alphas) + 1, k), xp.float64)
        weights[:-1] = shrink**2
        weights[-1] = 1.0
        sums = weights @ UtY2
        rss = xp.maximum(y_sq - sums[-1], 0.0)[None, :] + sums[:-1]
    df = 1.0 + xp.sum(1.0 - shrink, axis=1)  # +1: the intercept
    denom = (1.0 - df / n) ** 2
    denom = xp.maximum(denom, 1e-300)  # df = n (alpha -> 0 with k = n - 1): GCV undefined, never chosen
    out = rss / (n * denom[:, None])
    return out


def loo_shrinks(s, alphas, xp=None):
    """``alpha / (s^2 + alpha)`` for each alpha (alphas, k), float64."""
    xp = xp or _NP
    s2 = xp.cast(xp.asarray(s), xp.float64) ** 2
    a = xp.asarray(np.asarray(alphas, dtype=np.float64), xp.float64)
    return a[:, None] / (s2[None, :] + a[:, None])


def loo_inverse_one_minus_h(U, s, alphas, xp=None):
    """``1 / (1 - h_ii)`` for each alpha (alphas, n), in U's dtype; intercept included in the hat matrix.

    Built from the shrinkage ``a / (s^2 + a)`` and the leverage outside U's span, never as
    a difference of nearly equal numbers, so that small alphas stay accurate.
    """
    xp = xp or _NP
    n, k = U.shape
    U2 = xp.cast(U, xp.float64) ** 2
    shrink = loo_shrinks(s, alphas, xp)  # (a, k)
    inside = shrink @ U2.T  # (a, n): sum_k U_ik^2 a / (s_k^2 + a)
    if not _spans_centred_space(k, n):
        inside = inside + xp.maximum(1.0 - 1.0 / n - xp.sum(U2, axis=1), 0.0)[None, :]
    return xp.cast(1.0 / inside, U.dtype)  # float32, or float64 for float64 U


def loo_block(U, s, UtY, mean, Y, alpha, out: np.ndarray, inverses: dict | None = None) -> None:
    """Exact leave-one-out predictions of a block of targets, written into ``out`` (n, t) (numpy).

    With the centred design ``X = U diag(s) V'``, target ``j``'s ``alpha_j``, its centred
    ``U'(y - mean)`` (``UtY``, from the fit) and the hat matrix ``H = 11'/n + U diag(s^2 /
    (s^2 + alpha_j)) U'``, the prediction of image ``i`` by the model fitted without it is
    ``y_i - e_i / (1 - H_ii)`` (``e = y - Hy``). Costs one (n x k) x (k x t) product and a few
    in-place passes over ``out`` (which may be a column block of a wider array): no (n, t)
    temporaries, only row tiles of 8 MB where the block's targets have several alphas. ``1 / (1 - H_ii)``
    depends on the target only through its alpha (one of a few): it is computed once per distinct
    alpha (:func:`loo_inverse_one_minus_h`) and kept in ``inverses`` across blocks. Where ``1 - H_ii``
    is below 1e-6 (an image the fit interpolates) the prediction is NaN.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    s2 = np.asarray(s, dtype=np.float64)[:, None] ** 2
    B = (s2 / (s2 + alpha[None, :])).astype(np.float32)
    B *= UtY  # diag(s^2 / (s^2 + a)) U'(y - mean): the centred fitted values' coefficients
    np.matmul(U, B, out=out)  # every pass runs in place (a column block of a wider array is a strided view)
    out += mean
    out -= Y  # minus the residuals
    inverses = {} if inverses is None else inverses
    distinct, which = np.unique(alpha, return_inverse=True)
    which = which.ravel()
    missing = [a for a in distinct.tolist() if a not in inverses]
    if missing:
        with np.errstate(divide="ignore"):  # 1 / 0 where an image is interpolated: NaN below
            inverses_new = loo_inverse_one_minus_h(U, s, missing)
        for a, g in zip(missing, inverses_new):
            g = np.asarray(g, dtype=np.float32)
            bad = np.flatnonzero(~(g < 1e6))  # 1 - h <= 1e-6 (or not finite)
            g[bad] = 0.0  # finite, for the product below; those rows become NaN
            inverses[a] = (g, bad)
    if len(distinct) == 1:
        out *= inverses[distinct[0]][0][:, None]
    else:  # each column scaled by its alpha's 1 / (1 - h): a product with a one-hot (alphas x t)
        # matrix, a row tile at a time (fancy-indexing the columns is 10x slower)
        G = np.stack([inverses[a][0] for a in distinct.tolist()], axis=1)  # (n, alphas)
        onehot = np.zeros((len(distinct), out.shape[1]), np.float32)
        onehot[which, np.arange(out.shape[1])] = 1.0
        rows = max(1, min(out.shape[0], 2**21 // max(1, out.shape[1])))  # tiles of 8 MB
        tile = np.empty((rows, out.shape[1]), np.float32)
        for r0 in range(0, out.shape[0], rows):
            m = min(rows, out.shape[0] - r0)
            np.matmul(G[r0:r0 + m], onehot, out=tile[:m])
            out[r0:r0 + m] *= tile[:m]
    for j, a in enumerate(distinct.tolist()):
        bad = inverses[a][1]
        if bad.size:
            out[np.ix_(bad, np.flatnonzero(which == j))] = np.nan
    out += Y  # y - e / (1 - h)


def loo_errors(U, s, UtY, Yc, alphas, inv_d=None, xp=None):
    """Exact leave-one-out squared error (alphas, targets), float64, for centred targets ``Yc``.

    The residual of alpha is ``(Y - U U'Y) + U diag(a / (s^2 + a)) U'Y``: the part outside U's
    span plus the shrunk part, with no cancellation, so small alphas stay accurate in float32.
    Costs one (n x k) x (k x targets) product per alpha; see :func:`loo_errors_screened`.
    """
    xp = xp or _NP
    n, k = U.shape
    if inv_d is None:
        inv_d = loo_inverse_one_minus_h(U, s, alphas, xp)
    shrink = xp.cast(loo_shrinks(s, alphas, xp), U.dtype)
    outside = None if _spans_centred_space(k, n) else Yc - U @ UtY
    out = xp.zeros((len(alphas), UtY.shape[1]), xp.float64)
    for i in range(len(alphas)):
        out[i] = _loo_exact(U, shrink[i], UtY, outside, inv_d[i], xp)
    return out


def _loo_exact(U, shrink, UtY, outside, inv_d, xp):
    resid = U @ (shrink[:, None] * UtY)
    if outside is not None:
        resid += outside
    return xp.weighted_col_sq_sums(resid, inv_d * inv_d)


def loo_weighted_grams(U, inv_d, xp=None):
    """``U' diag(1 / (1 - h(alpha))^2) U`` for each alpha (alphas, k, k), float32."""
    xp = xp or _NP
    n, k = U.shape
    a = inv_d.shape[0]
    W = (inv_d * inv_d).T  # (n, a)
    out = xp.zeros((a * k, k), xp.float32)
    step = max(1, 2**24 // (a * k))  # one (rows, a k) float32 block of 64 MB at most
    for i in range(0, n, step):  # one stacked product: much faster than a k x k product per alpha
        Ub = U[i:i + step]
        S = (Ub[:, None, :] * W[i:i + step, :, None]).reshape(Ub.shape[0], a * k)
        out += S.T @ Ub
    return out.reshape(a, k, k)


def loo_errors_screened(U, s, UtY, Yc, alphas, inv_d, grams, xp=None, slack: float = 1e-5):
    """Leave-one-out errors (alphas, targets) that pick exactly the alphas :func:`loo_errors` picks,
    in about three (n x k) x (k x targets) products instead of one per alpha.

    With ``w = 1 / (1 - h)^2``, ``O = Y - U U'Y`` (outside U's span) and ``R = U diag(a/(s^2+a)) U'Y``
    (the shrunk part), the error of alpha is ``w'(O^2) + sum_i w_i R_i^2 + 2 sum_i w_i O_i R_i``.
    The first two terms are computed exactly (``R' U' W U R`` from the k x k matrices ``grams``);
    the cross term is bounded: as ``O`` is orthogonal to ``U``, it equals
    ``2 sum_i (w_i - mean(w)) O_i R_i``, at most ``2 ||(w - mean w) O|| ||R||`` (Cauchy-Schwarz).
    An alpha whose lower bound exceeds another's upper bound cannot be the best; for the targets
    where more than one alpha remains (typically a fifth), the remaining alphas' errors are
    computed exactly. Returned values are exact (to float32 rounding) for those contenders, the
    midpoint estimate for a target's single remaining alpha, and lower bounds for the rest: the
    argmin is the exact criterion's, the values elsewhere are not.
    """
    xp = xp or _NP
    a = len(alphas)
    shrink64 = loo_shrinks(s, alphas, xp)  # (a, k)
    shrink = xp.cast(shrink64, xp.float32)
    outside = Yc - U @ UtY
    O2 = outside * outside
    w = inv_d * inv_d  # (a, n) float32
    wc = w - xp.sum(w, axis=1)[:, None] / w.shape[1]
    T1 = xp.cast(w @ O2, xp.float64)  # (a, t)
    cross = xp.sqrt(xp.maximum(xp.cast((wc * wc) @ O2, xp.float64), 0.0))
    R2 = xp.cast((shrink * shrink) @ (UtY * UtY), xp.float64)  # ||R||^2 (U orthonormal)
    T3 = xp.zeros(T1.shape, xp.float64)
    for i in range(a):
        SC = shrink[i][:, None] * UtY
        T3[i] = xp.cast(xp.sum(SC * (grams[i] @ SC), axis=0), xp.float64)
    mid = T1 + T3
    bound = 2.0 * cross * xp.sqrt(R2) + slack * mid
    lo, hi = mid - bound, mid + bound
    lo_np, hi_np = xp.to_numpy(lo), xp.to_numpy(hi)
    cand = lo_np <= hi_np.min(axis=0)[None, :]
    out = xp.to_numpy(mid).copy()
    out[~cand] = lo_np[~cand]
    contested = np.flatnonzero(cand.sum(axis=0) > 1)
    for i in range(a):
        cols = contested[cand[i, contested]]
        if cols.size:
            UtY_c, O_c = xp.take(UtY, cols, 1), xp.take(outside, cols, 1)
            out[i, cols] = xp.to_numpy(_loo_exact(U, shrink[i], UtY_c, O_c, inv_d[i], xp))
    return out


def kfold_errors(folds, Y, alphas, xp=None):
    """Squared error (alphas, targets) summed over held-out folds.

    ``folds``: list of ``(rows, U, s, P)``: held-out rows, the decomposition of the other rows
    (centred by their own mean) and the held-out rows projected on its right-singular vectors.
    """
    xp = xp or _NP
    n = Y.shape[0]
    a = np.asarray(alphas, dtype=np.float64)
    out = xp.zeros((len(a), Y.shape[1]), xp.float64)
    for rows, U, s, P in folds:
        rows = np.asarray(rows)
        train = np.setdiff1d(np.arange(n), rows)
        Y_tr, Y_te = xp.take(Y, train, 0), xp.take(Y, rows, 0)
        mean = xp.col_means(Y_tr)
        UtY = xp.asarray(U, xp.float32).T @ (Y_tr - mean)
        s64 = xp.cast(xp.asarray(s), xp.float64)
        P = xp.asarray(P, xp.float32)
        for i, alpha in enumerate(a):
            coef = xp.cast(s64 / (s64**2 + alpha), xp.float32)
            resid = Y_te - mean - P @ (coef[:, None] * UtY)
            out[i] += xp.col_sq_sums(resid)
    return out


def refine_near_ties(U, s, Yc, alphas, errors: np.ndarray, xp=None, rtol: float = 1e-5) -> np.ndarray:
    """Recompute in float64 the LOO errors of targets whose two best alphas are within ``rtol``.

    float32 rounding can flip such near-ties; in float64 the choice agrees with scikit-learn's
    (which works in float64) except for ties closer than float32 data can resolve. Few targets
    qualify, so this costs little. Returns ``errors`` (numpy), updated in place.
    """
    xp = xp or _NP
    if errors.shape[0] < 2:
        return errors
    part = np.partition(errors, 1, axis=0)
    cols = np.flatnonzero(part[1] - part[0] <= rtol * np.abs(part[0]))
    if cols.size:
        U64 = np.asarray(xp.to_numpy(U), dtype=np.float64)
        Y64 = np.asarray(xp.to_numpy(xp.take(Yc, cols, 1)), dtype=np.float64)
        errors[:, cols] = loo_errors(U64, np.asarray(xp.to_numpy(s), np.float64), U64.T @ Y64, Y64, alphas)
    return errors


def select_alphas(errors, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Best alpha per target (the first of ties, like scikit-learn) and its index, as numpy."""
    errors = np.asarray(errors)
    idx = np.argmin(np.where(np.isnan(errors), np.inf, errors), axis=0)
    return np.asarray(alphas, dtype=np.float64)[idx], idx


def coefficients_svd_basis(s, UtY, alpha_per_target, xp=None):
    """Coefficients in the right-singular basis (k, targets): ``diag(s/(s^2+a_t)) U'Y``; a = 0 is OLS."""
    xp = xp or _NP
    s32 = xp.cast(xp.asarray(s), xp.float32)[:, None]
    a = xp.asarray(np.asarray(alpha_per_target, dtype=np.float32), xp.float32)[None, :]
    coef = s32 / (s32 * s32 + a)  # float32: s^2 + a loses nothing that matters here
    coef *= UtY  # in place: two (k, targets) arrays made, not three
    return coef


# ----------------------------------------------------------------------------- fit


def _block(n: int, t: int, block: int | None, cv: str = "gcv") -> int:
    return max(1, min(t, block or BLOCK_BYTES[cv] // max(1, 4 * n)))


def _target_block(Y, c0: int, c1: int, xp):
    """Columns c0:c1 of Y as float32 on the backend: a view (no copy) for numpy when possible."""
    blk = Y[:, c0:c1]
    if xp.name == "numpy" and isinstance(blk, np.ndarray) and blk.dtype == np.float32 and blk.strides[1] == 4:
        return blk  # BLAS reads a column block of a row-major matrix in place
    return xp.asarray(np.ascontiguousarray(blk, dtype=np.float32), xp.float32)


def _project_targets(U1, Yb, n: int, xp):
    """``U'(Y - mean)`` and the means from one product with ``U1 = [U - mean(U), 1]``: as
    ``(U - 1 u')'Y = U'(Y - 1 mean')`` when ``u = U'1 / n``, no centred copy of Y, no correction."""
    G = U1.T @ Yb
    k = G.shape[0] - 1
    return G[:k], G[k] / n


def fit_predict(
    U,
    s,
    P,
    Y,
    alphas=DEFAULT_ALPHAS,
    cv: str = "gcv",
    folds=None,
    xp=None,
    block: int | None = None,
    add_mean: bool = True,
    rows=None,
    loo_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose each target's alpha and predict new rows, block of targets by block of targets.

    Parameters
    ----------
    U, s : the decomposition of the centred training design, (n, k) and (k,)
    P : (m, k) new rows (centred with the training means) projected on the right-singular vectors
    Y : (n, t) training targets (not centred: the intercept is fitted here); may be memory-mapped
    alphas : sequence of float (0 is allowed with a single alpha: ordinary least squares)
    cv : {"gcv", "loo", "kfold"}
    folds : for ``kfold``, a list of ``(rows, U, s, P)`` (see :func:`kfold_errors`)
    xp : backend (default numpy)
    block : targets per block (default: :data:`BLOCK_BYTES` of float32 targets)
    add_mean : add the targets' training means (the intercept); with ``P = V`` and False, the
        result is the coefficients (p, t)
    rows : the rows of Y that U's rows are (default: all). gcv reads Y in place, with U's rows
        scattered into zeros, so that a fold's fit copies no targets
    loo_out : (n, t) float32 numpy array, optional
        Filled with the exact leave-one-out predictions of every training row at each target's
        chosen alpha (:func:`loo_block`), from the fit's own ``U'Y``: one more product, not two.
        Needs ``rows`` None.

    Returns
    -------
    predictions : (m, t) float32 numpy array
    best_alphas : (t,) float64 numpy array
    """
    pred, best, _ = _fit_predict(U, s, P, Y, alphas, cv, folds, xp, block, add_mean, rows, loo_out)
    return pred, best


def _fit_predict(U, s, P, Y, alphas, cv, folds, xp, block, add_mean, rows, loo_out=None):
    """:func:`fit_predict`, also returning the targets' training means (t,) float32 numpy."""
    xp = xp or _NP
    if cv not in CRITERIA:
        raise ValueError(f"unknown ridge cv {cv!r}: use {', '.join(CRITERIA)}")
    if cv == "kfold" and not folds:
        raise ValueError("ridge cv kfold needs the per-fold decompositions (a design built with n_folds)")
    alphas = np.asarray(alphas, dtype=np.float64)
    if loo_out is not None and (rows is not None or loo_out.shape != Y.shape):
        raise ValueError("leave-one-out predictions need a fit on every row of Y, and an output of Y's shape")
    if rows is not None and cv != "gcv":
        Y, rows = np.take(Y, np.asarray(rows), axis=0), None
    n_all, t = Y.shape
    U, P = xp.asarray(U, xp.float32), xp.asarray(P, xp.float32)
    n, k = U.shape
    s = xp.cast(xp.asarray(s), xp.float64)
    if cv == "gcv":
        # [U - mean(U), 1] with U's rows where they belong in Y: U'(Y - mean) and the column sums in
        # one product (U's column means are ~0 as X is centred, kept for exactness)
        U1 = xp.zeros((n_all, k + 1), xp.float32)
        at = np.arange(n_all) if rows is None else np.asarray(rows)
        U1[at, :k] = U - xp.col_means(U)
        U1[at, k] = 1.0
        others = None if rows is None else np.setdiff1d(np.arange(n_all), at)
    inv_d = loo_inverse_one_minus_h(U, s, alphas, xp) if cv == "loo" and len(alphas) > 1 else None
    step = _block(n, t, block, cv)
    # Screening pays once the k x k matrices cost less than the products they save.
    screen = inv_d is not None and not _spans_centred_space(k, n) and min(t, step) >= k
    grams = loo_weighted_grams(U, inv_d, xp) if screen else None
    pred = np.empty((P.shape[0], t), dtype=np.float32)
    best = np.empty(t, dtype=np.float64)
    means = np.empty(t, dtype=np.float32)
    inverses: dict = {}  # 1 / (1 - h) per alpha, for loo_out
    U_np = xp.to_numpy(U) if loo_out is not None else None
    for c0 in range(0, t, step):
        c1 = min(t, c0 + step)
        Yb = _target_block(Y, c0, c1, xp)
        if cv == "gcv":  # read the block in place: U'Y and the means in one product, no centred copy
            UtY, mean, y_sq = _gcv_project(U1, U, Yb, n, rows, others, xp)
        else:  # loo and kfold form residuals of the block anyway: centre it first
            mean = xp.col_means(Yb)
            Yc = Yb - mean
            UtY = U.T @ Yc
        if len(alphas) == 1:
            chosen = np.full(c1 - c0, alphas[0])
        else:
            if cv == "gcv":
                errors = gcv_errors(s, UtY, y_sq, alphas, n, xp)
            elif cv == "loo" and grams is not None and Yb.shape[1] >= k:
                errors = loo_errors_screened(U, s, UtY, Yc, alphas, inv_d, grams, xp)
            elif cv == "loo":
                errors = loo_errors(U, s, UtY, Yc, alphas, inv_d, xp)
            else:
                errors = kfold_errors(folds, Yb, alphas, xp)
            errors = np.array(xp.to_numpy(errors))
            if cv == "loo":
                errors = refine_near_ties(U, s, Yc, alphas, errors, xp)
            chosen, _ = select_alphas(errors, alphas)
        B = coefficients_svd_basis(s, UtY, chosen, xp)
        _predict_block(P, B, mean if add_mean else None, pred[:, c0:c1], xp)
        best[c0:c1] = chosen
        means[c0:c1] = xp.to_numpy(mean)
        if loo_out is not None:
            loo_block(U_np, xp.to_numpy(s), xp.to_numpy(UtY), means[c0:c1], np.asarray(Y[:, c0:c1], np.float32),
                      chosen, loo_out[:, c0:c1], inverses)
    return pred, best, means


def _gcv_project(U1, U, Yb, n: int, rows, others, xp):
    """``U'(Y - mean)`` (k, t) float32, the means (t,) float32 and the centred sums of squares
    (t,) float64 of a block of targets read in place (``rows``, ``others``: see :func:`fit_predict`)."""
    UtY, mean = _project_targets(U1, Yb, n, xp)
    mean64 = xp.cast(mean, xp.float64)
    y_sq = _col_sq_sums(Yb, xp) - n * mean64**2  # centred sums of squares (float64)
    if others is not None:
        y_sq = y_sq - xp.col_sq_sums(xp.take(Yb, others, 0))
    far = np.flatnonzero(xp.to_numpy(n * mean64**2 > MEAN_TO_STD**2 * xp.maximum(y_sq, 0.0)))
    if far.size:  # targets far from zero: the float64 mean and the exact product of the centred columns
        Yc_far = xp.take(Yb, far, 1)
        if rows is not None:
            Yc_far = xp.take(Yc_far, np.asarray(rows), 0)
        mean[far] = xp.col_means(Yc_far)
        Yc_far = Yc_far - mean[far]
        UtY[:, far] = U.T @ Yc_far
        y_sq[far] = xp.col_sq_sums(Yc_far)
    return UtY, mean, y_sq


def _col_sq_sums(Y, xp):
    """``xp.col_sq_sums(Y)``; on numpy by strips of :data:`SQ_STRIP` columns spread over BLAS's
    threads (numpy runs this pass over the targets on one core, at a third of the memory's speed)."""
    t = Y.shape[1]
    if xp.name != "numpy" or t <= SQ_STRIP // 2:
        return xp.col_sq_sums(Y)
    threads = _blas_threads()
    bounds = np.linspace(0, t, max(threads, -(-t // SQ_STRIP)) + 1).astype(int)
    strips = [Y[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if threads == 1:
        return np.concatenate([xp.col_sq_sums(y) for y in strips])
    with ThreadPoolExecutor(threads) as pool:  # numpy releases the GIL in einsum
        return np.concatenate(list(pool.map(xp.col_sq_sums, strips)))


def _blas_threads() -> int:
    """Threads numpy's BLAS runs with (as capped by :func:`.backend.set_threads` or threadpoolctl)."""
    from threadpoolctl import ThreadpoolController

    return max([lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers],
               default=1)


def _predict_block(P, B, mean, out: np.ndarray, xp) -> None:
    """``out[:] = P @ B (+ mean)``; on numpy written in place (``out`` is a column block of the predictions)."""
    if xp.name == "numpy":
        np.matmul(P, B, out=out)
        if mean is not None:
            out += mean
        return
    pb = P @ B
    out[:] = xp.to_numpy(pb + mean if mean is not None else pb)


# ----------------------------------------------------------------------------- estimator


class RidgeCV:
    """Ridge with one alpha per target chosen by ``gcv``, ``loo`` or ``kfold``; sklearn-style.

    Features are centred (not scaled) internally and the intercept is unpenalised, as in
    ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True, fit_intercept=True)``.
    ``backend``: see :mod:`.backend`.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv: str = "gcv", n_folds: int = 5, method: str = "auto",
                 backend: str = "numpy"):
        self.alphas = alphas
        self.cv = cv
        self.n_folds = n_folds
        self.method = method
        self.backend = backend

    def fit(self, X, Y):
        from .backend import get_backend

        xp = get_backend(self.backend)
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        squeeze = Y.ndim == 1
        Y = Y[:, None] if squeeze else Y
        if self.cv not in CRITERIA:
            raise ValueError(f"unknown ridge cv {self.cv!r}: use {', '.join(CRITERIA)}")
        self.x_mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        dec = decompose(X - self.x_mean_, self.method, xp)
        folds = kfold_design(X, self.n_folds, self.method, xp) if self.cv == "kfold" else None
        # "Predicting" the rows of V gives the coefficients in the feature basis.
        coef, self.alpha_, y_mean = _fit_predict(dec.U, dec.s, dec.V, Y, self.alphas, self.cv, folds, xp, None,
                                                 False, None)
        self.coef_ = coef.T  # (t, p)
        self.intercept_ = y_mean - self.coef_ @ self.x_mean_
        self.method_ = dec.method
        if squeeze:
            self.coef_, self.intercept_, self.alpha_ = self.coef_[0], self.intercept_[0], self.alpha_[0]
        return self

    def predict(self, X):
        pred = np.asarray(X, dtype=np.float32) @ self.coef_.T
        pred += self.intercept_
        return pred


def kfold_design(X, n_folds: int, method: str = "auto", xp=None) -> list[tuple]:
    """Per contiguous fold: held-out rows, and the decomposition of the other rows (centred by
    their own mean) with the held-out rows projected on it: ``[(rows, U, s, P), ...]``."""
    xp = xp or _NP
    X = np.asarray(X, dtype=np.float32)
    out = []
    for rows in kfold_rows(len(X), n_folds):
        train = np.setdiff1d(np.arange(len(X)), rows)
        mean = X[train].mean(axis=0, dtype=np.float64).astype(np.float32)
        dec = decompose(X[train] - mean, method, xp)
        out.append((rows, dec.U, dec.s, project(dec, X[rows] - mean, xp)))
    return out

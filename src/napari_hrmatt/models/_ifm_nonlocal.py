"""The non-local flows of information-flow matting (:mod:`.ifm`) as one matrix-free operator.

The colour-mixture rows ``I - W`` and the intra-unknown edges (the KNN flow's edges join
them, :mod:`._ifm_knn`) on the flat grid of a crop: products by torch CSR matrices, or on
CPU by the numba kernels of :mod:`._ifm_kernels`; the diagonal for the preconditioner.
Private to :mod:`.ifm` and :mod:`._ifm_coarse`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ._knn import use_numba


class _NonLocal:
    """Colour-mixture and intra-unknown flows as a matrix-free operator on a flat grid.

    Colour mixture: rows ``p`` (unknown) of ``I - W``; the operator is
    ``sigma_cm (I - W)^T (I - W)``. Intra-U: edges ``(p, q, w)``; the operator is the graph
    Laplacian of ``sigma_uu (W + W^T)``. Applied as sparse (CSR) matrix-vector products
    with ``I - W``, its transpose and ``W + W^T`` (never ``(I - W)^T (I - W)``, which would
    hold about ``k_cm^2`` entries per row); the matrices are built once per dtype. On CPU
    (unless ``backend="torch"``) one numba kernel does the same gather / scatter instead
    (:func:`._ifm_kernels.nonlocal_apply_kernel`, same numbers up to rounding).
    """

    def __init__(
        self, n, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, *, backend=None
    ):
        self.n, self.sigma_cm = n, sigma_cm
        self.cm_rows, self.cm_index, self.cm_w = cm_rows, cm_index, cm_w
        self.uu_rows, self.uu_index = uu_rows, uu_index
        self.uu_q, self.uu_w = uu_index.reshape(-1), uu_w.reshape(-1)
        self._mats = {}
        self._numba = None
        if use_numba(cm_w, backend):
            # CPU: one fused gather / scatter kernel, row by row (an intra-U edge's p is
            # its row: not stored); int32 indices; the weights in the vectors' dtype
            # (float64 until ``to``; float32 weights: GT04 0.5 MP product 14 -> 10 ms).
            ix = np.int32 if n < 2**31 else np.int64
            self._numba = tuple(
                np.ascontiguousarray(t.numpy(), dtype)
                for t, dtype in (
                    (cm_rows, ix), (cm_index, ix), (cm_w, np.float64),
                    (uu_rows, ix), (uu_index, ix), (uu_w, np.float64),
                )
            )  # fmt: skip
            # ifm_system passes the same rows to both lists: one loop over them (fixed here,
            # not re-checked by every product).
            self._same = bool(torch.equal(cm_rows, uu_rows))
            return
        dev, m, k = cm_w.device, cm_rows.numel(), cm_index.shape[1]
        # I - W: row r holds p (weight 1) and its k neighbours (missing ones point at p
        # with weight 0), already in CSR order; its transpose and W_uu + W_uu^T need one
        # sort each (by row), kept for every dtype.
        self._mix_cols = torch.cat([cm_rows[:, None], cm_index], 1).reshape(-1)
        self._mix_crow = torch.arange(m + 1, device=dev) * (k + 1)
        self._mix_t = _csr_pattern(
            self._mix_cols, torch.arange(m, device=dev).repeat_interleave(k + 1), n
        )
        uu_p = self.uu_p
        self._uu = _csr_pattern(torch.cat([uu_p, self.uu_q]), torch.cat([self.uu_q, uu_p]), n)

    @property
    def uu_p(self) -> torch.Tensor:
        """The row of every intra-U edge (flat, as ``uu_q``; built when asked)."""
        return self.uu_rows[:, None].expand_as(self.uu_index).reshape(-1)

    def _matrices(self, dtype):
        if dtype not in self._mats:
            m, k = self.cm_index.shape
            ones = torch.ones((m, 1), dtype=dtype, device=self.cm_w.device)
            vals = torch.cat([ones, -self.cm_w.to(dtype)], 1).reshape(-1)
            mix = _sparse_csr(self._mix_crow, self._mix_cols, vals, (m, self.n))
            order, crow, cols = self._mix_t
            mix_t = _sparse_csr(crow, cols, vals[order], (self.n, m))
            w = self.uu_w.to(dtype)
            order, crow, cols = self._uu
            adj = _sparse_csr(crow, cols, torch.cat([w, w])[order], (self.n, self.n))
            deg = torch.zeros(self.n, dtype=dtype, device=w.device)
            deg.index_add_(0, self.uu_p, w).index_add_(0, self.uu_q, w)
            self._mats[dtype] = (mix, mix_t, adj, deg)
        return self._mats[dtype]

    def to(self, dtype):
        self.cm_w, self.uu_w = self.cm_w.to(dtype), self.uu_w.to(dtype)
        if self._numba is not None:
            npd = np.float32 if dtype == torch.float32 else np.float64
            rows, index, w, uu_rows, uu_index, uu_w = self._numba
            self._numba = (rows, index, w.astype(npd), uu_rows, uu_index, uu_w.astype(npd))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._numba is not None:
            from ._ifm_kernels import nonlocal_apply_kernel

            xa = np.ascontiguousarray(x.numpy())
            out = np.empty_like(xa)
            nonlocal_apply_kernel(xa, float(self.sigma_cm), *self._numba, self._same, out)
            return torch.from_numpy(out)
        mix, mix_t, adj, deg = self._matrices(x.dtype)
        out = mix_t @ (mix @ x)
        if self.sigma_cm != 1:
            out *= self.sigma_cm
        out += deg * x
        out -= adj @ x
        return out

    def apply_sum(self, x, base, shift, mask) -> torch.Tensor:
        """``(base + self(x) + shift x) mask`` for (H, W) tensors (``x``'s shape): the CG
        operator of :func:`solve_ifm` with ``base`` the local stencil's product. On CPU one
        numba pass (:func:`._ifm_kernels.cg_apply_kernel`), else torch."""
        if self._numba is not None and all(
            t.dtype == x.dtype and t.device.type == "cpu" for t in (base, shift, mask)
        ):
            from ._ifm_kernels import cg_apply_kernel

            def flat(t):
                return np.ascontiguousarray(t.numpy()).reshape(-1)

            out = np.empty(x.numel(), dtype=flat(x).dtype)
            cg_apply_kernel(
                flat(x), float(self.sigma_cm), *self._numba, self._same,
                flat(base), flat(shift), flat(mask), out,
            )  # fmt: skip
            return torch.from_numpy(out.reshape(x.shape))
        return (base + self(x.reshape(-1)).reshape(x.shape) + shift * x) * mask

    def diagonal(self, dtype) -> torch.Tensor:
        if self._numba is not None and dtype == torch.float64:  # the same sums, one pass
            from ._ifm_kernels import nonlocal_diagonal_kernel

            out = np.zeros(self.n, np.float64)
            nonlocal_diagonal_kernel(float(self.sigma_cm), *self._numba, out)
            return torch.from_numpy(out)
        out = torch.zeros(self.n, dtype=dtype, device=self.cm_w.device)
        ones = torch.full(self.cm_rows.shape, self.sigma_cm, dtype=dtype, device=out.device)
        out.index_add_(0, self.cm_rows, ones)
        cm = self.sigma_cm * self.cm_w.to(dtype) ** 2
        out.index_add_(0, self.cm_index.reshape(-1), cm.reshape(-1))
        out.index_add_(0, self.uu_p, self.uu_w.to(dtype))
        out.index_add_(0, self.uu_q, self.uu_w.to(dtype))
        return out

    def dense(self) -> np.ndarray:
        """The operator as a dense matrix (tests only: ``n`` columns of products)."""
        eye = torch.eye(self.n, dtype=self.cm_w.dtype, device=self.cm_w.device)
        return torch.stack([self(e) for e in eye], 1).cpu().numpy()


def _csr_pattern(rows, cols, n):
    """``(order, crow_indices, col_indices)`` of the CSR matrix with ``n`` rows holding the
    entries ``(rows[i], cols[i])``; its values are ``vals[order]`` (duplicates allowed)."""
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return order, crow, cols[order]


def _sparse_csr(crow, cols, vals, size):
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals, size, check_invariants=False)

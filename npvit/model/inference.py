"""The fast inference forward for the NumPy backend: same math as the op-by-op path, less traffic.

What it does differently from ``VisionTransformer._forward_features`` (the reference, which the tests
compare this against):

* no caches, and every intermediate lives in one of six preallocated (M, .) buffers, M = B * N;
* elementwise work (LayerNorm, bias + GELU, bias + residual) runs on all cores, in row blocks that
  stay in cache, fusing what the reference does in separate passes;
* GELU runs in place, through the backend's fused kernel (the one the op-by-op path uses too);
* each thread runs a block's branches on its own chunk of rows with OpenBLAS set to one thread
  (LayerNorm -> qkv GEMM; proj GEMM -> residual -> LayerNorm -> fc1 GEMM -> bias+GELU -> fc2 GEMM
  -> residual), so GEMM outputs are consumed while still in cache;
* attention runs head by head on the pool, scores in a small per-thread (N, N) scratch instead of a
  (B, H, N, N) array.
"""
import math

import numpy as np

from ..ops.layernorm import normalize_rows
from ..ops.patch_embed import patchify

ROW_BLOCK = 32          # rows per elementwise block: 32 x 3072 float32 = 384 KiB, inside L2
CHUNK_ROWS = 256        # rows per single-threaded GEMM chunk (best of 64/128/256/512 measured)


# --- elementwise kernels on a block of rows (called from the pool) --------------------------------
def layernorm_rows(x, weight, bias, eps, out):
    """out = LayerNorm(x) for a (rows, D) block (the op's own normalisation kernel)."""
    normalize_rows(x, eps, out, np)
    out *= weight
    out += bias


def bias_gelu_rows(a, bias, kind, scratch, backend):
    """a = GELU(a + bias) in place, for a (rows, H) block; ``scratch`` is three (rows, H) arrays."""
    a += bias
    s1, s2, s3 = (s[: a.shape[0]] for s in scratch)
    if kind == "exact":
        backend.gelu_exact(a, a, scratch=(s1, s2, s3))  # the same kernel the op-by-op path uses
        return
    # tanh form, in place: 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))
    np.multiply(a, a, out=s1)
    s1 *= 0.044715
    s1 += 1.0
    s1 *= a
    s1 *= math.sqrt(2.0 / math.pi)
    np.tanh(s1, out=s1)
    s1 += 1.0
    s1 *= 0.5
    a *= s1


class InferenceEngine:
    """Runs a NumPy-backend VisionTransformer's eval forward with the techniques above."""

    def __init__(self, model):
        self.model = model
        self.pool = model.backend.pool
        self.blas = model.backend.blas

    def _rows(self, fn, n):
        """Run fn(lo, hi) over ``n`` rows in cache-sized blocks spread across the pool."""
        def worker(lo, hi):
            for s in range(lo, hi, ROW_BLOCK):
                fn(s, min(s + ROW_BLOCK, hi))
        self.pool.run(worker, n, min_rows=ROW_BLOCK)

    def features(self, x):
        """Final-norm token features (B, N, D), as ``_forward_features`` in eval mode."""
        m, cfg, p = self.model, self.model.config, self.model.params
        dtype = x.dtype
        B, N, D, hidden = x.shape[0], m._num_tokens(), cfg.embed_dim, cfg.mlp_hidden
        M = B * N
        with self.blas.limit(1):  # never wake OpenBLAS's own threads: they would spin on the pool's cores
            h2 = self._embed(x, B, N, D)
            ln = np.empty((M, D), dtype)
            qkv = np.empty((M, 3 * D), dtype)
            att = np.empty((M, D), dtype)
            mlp = np.empty((M, hidden), dtype)
            for i in range(cfg.depth):
                self._block(i, h2, ln, qkv, att, mlp, B, N)
            out = np.empty_like(h2)
            self._rows(lambda lo, hi: layernorm_rows(h2[lo:hi], p["norm.weight"], p["norm.bias"], cfg.norm_eps,
                                                     out[lo:hi]), M)
        return out.reshape(B, N, D)

    def _embed(self, x, B, N, D):
        """Token rows (B*N, D): patch embedding (its GEMM split by rows across the pool), prefix
        tokens before the patches, plus the position embedding."""
        p, cfg = self.model.params, self.model.config
        n_prefix = cfg.num_prefix_tokens
        patches = np.ascontiguousarray(patchify(x, cfg.patch_size)).reshape(B * (N - n_prefix), -1)
        weight_t = p["patch_embed.proj.weight"].reshape(D, -1).T
        tokens = np.empty((patches.shape[0], D), x.dtype)
        self.pool.run(lambda lo, hi: np.matmul(patches[lo:hi], weight_t, out=tokens[lo:hi]), patches.shape[0])
        h = np.empty((B, N, D), x.dtype)
        h[:, n_prefix:] = tokens.reshape(B, N - n_prefix, D)
        h[:, n_prefix:] += p["patch_embed.proj.bias"]
        for i, name in enumerate(n for n in ("cls_token", "dist_token") if n in p):
            h[:, i] = p[name][0, 0]
        h += p["pos_embed"]
        return h.reshape(B * N, D)

    def _block(self, i, h, ln, qkv, att, mlp, B, N):
        """One encoder block.  Each thread runs whole branches on its own chunk of rows with
        single-threaded BLAS, so a GEMM's output is still in cache for the elementwise work after it
        (measured paired against whole-array GEMMs on OpenBLAS's threads: 0.92x time at batch 1,
        0.96x at batch 32)."""
        cfg, p, b = self.model.config, self.model.params, f"blocks.{i}."
        eps, M, hidden = cfg.norm_eps, h.shape[0], mlp.shape[1]
        qkv_w, qkv_b = p[b + "attn.qkv.weight"].T, p.get(b + "attn.qkv.bias")

        def pre_attention(lo, hi):
            for s in range(lo, hi, CHUNK_ROWS):
                e = min(s + CHUNK_ROWS, hi)
                layernorm_rows(h[s:e], p[b + "norm1.weight"], p[b + "norm1.bias"], eps, ln[s:e])
                np.matmul(ln[s:e], qkv_w, out=qkv[s:e])
                if qkv_b is not None:
                    qkv[s:e] += qkv_b

        def post_attention(lo, hi):
            tmp = [np.empty((ROW_BLOCK, hidden), h.dtype) for _ in range(3)]
            for s in range(lo, hi, CHUNK_ROWS):
                e = min(s + CHUNK_ROWS, hi)
                np.matmul(att[s:e], p[b + "attn.proj.weight"].T, out=ln[s:e])
                _add_bias_residual(h[s:e], ln[s:e], p[b + "attn.proj.bias"])
                layernorm_rows(h[s:e], p[b + "norm2.weight"], p[b + "norm2.bias"], eps, ln[s:e])
                m = mlp[s:e]
                np.matmul(ln[s:e], p[b + "mlp.fc1.weight"].T, out=m)
                for r in range(0, e - s, ROW_BLOCK):
                    bias_gelu_rows(m[r:r + ROW_BLOCK], p[b + "mlp.fc1.bias"], cfg.gelu, tmp, self.model.backend)
                np.matmul(m, p[b + "mlp.fc2.weight"].T, out=ln[s:e])
                _add_bias_residual(h[s:e], ln[s:e], p[b + "mlp.fc2.bias"])

        self.pool.run(pre_attention, M, min_rows=ROW_BLOCK)
        self._attention_heads(qkv, att, B, N)
        self.pool.run(post_attention, M, min_rows=ROW_BLOCK)

    def _attention_heads(self, qkv, out, B, N):
        """out (M, D) = softmax(q k^T * scale) v, per image and head, split across the pool; the
        caller holds OpenBLAS at one thread.  Scores live in a per-thread (N, N) scratch."""
        cfg = self.model.config
        H, Dh, scale = cfg.num_heads, cfg.head_dim, cfg.scale
        q5 = qkv.reshape(B, N, 3, H, Dh)
        o4 = out.reshape(B, N, H, Dh)

        def heads(lo, hi):
            s = np.empty((N, N), qkv.dtype)
            q = np.empty((N, Dh), qkv.dtype)
            o = np.empty((N, Dh), qkv.dtype)
            ones = np.ones(N, qkv.dtype)
            for j in range(lo, hi):
                bi, hi_ = divmod(j, H)
                np.multiply(q5[bi, :, 0, hi_], scale, out=q)
                np.matmul(q, q5[bi, :, 1, hi_].T, out=s)
                s -= s.max(axis=1, keepdims=True)
                np.exp(s, out=s)
                row_sum = s @ ones
                np.matmul(s, q5[bi, :, 2, hi_], out=o)                       # normalised after the
                np.divide(o, row_sum[:, None], out=o4[bi, :, hi_])           # product, as the op does
        self.pool.run(heads, B * H)


def _add_bias_residual(h, y, bias):
    y += bias
    h += y


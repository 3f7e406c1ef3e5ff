"""The fast inference forward for the NumPy backend: same math as the op-by-op path, less traffic.

What it does differently from ``VisionTransformer._forward_features`` (the reference, which the tests
compare this against):

* no caches, and every intermediate lives in one of a few preallocated (rows, .) buffers;
* elementwise work (LayerNorm, bias + GELU, bias + residual) runs in row blocks that stay in cache,
  fusing what the reference does in separate passes; GELU runs in place, through the backend's fused
  kernel (the one the op-by-op path uses too);
* attention runs head by head, scores in a small (N, N) scratch instead of a (B, H, N, N) array,
  in base 2 (exp2 is NumPy's faster exponential); the k part of the qkv bias is dropped and the v
  part folded into the projection's bias (both exact: see ``_proj_bias``);
* with ``prefix_only`` (a class-token head) the last block works on the prefix rows alone, beyond
  the keys and values every query needs (``_last_block_for_prefix``);
* OpenBLAS stays at one thread: npvit's pool is the parallelism.

How the threads share the work:

* **whole images** (the first ``threads * (B // threads)`` images): each thread runs the entire
  network on its own share of the batch, a group of about ``GROUP_ROWS`` token rows at a time.
  Threads never wait for each other, and every product has ~1000 rows or more: fc1 on two threads ran
  at 366 GFLOP/s in 3152-row products but 268 in 256-row chunks (this project's Zen 5 machine,
  AVX-512 kernels).
* **rows of an image** (the ``B mod threads`` images left over, so batch 1 too): each block's stages
  are split across the pool, token rows for LayerNorm and the products, (image, head) pairs for
  attention.
"""
import math

import numpy as np

from ..ops.attention import LOG2E
from ..ops.layernorm import normalize_rows
from ..ops.patch_embed import patchify

ROW_BLOCK = 32          # rows per elementwise block: 32 x 3072 float32 = 384 KiB, inside L2
                        # (the GELU kernel on 16- or 64-row blocks measured no faster)
GROUP_ROWS = 2048       # token rows a thread takes through the network at once (whole images;
                        # paired at batch 32: 1024 rows 4% slower, 4096 and 8192 within noise)


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
        self.biases = None  # per block: (q bias or None, projection bias), set by features()

    def features(self, x, prefix_only=False):
        """Final-norm token features (B, N, D), as ``_forward_features`` in eval mode; with
        ``prefix_only`` those of the class (and distillation) tokens only, (B, P, D), which is all
        a token-pooling head reads, and the last block then skips the rest (see
        ``_last_block_for_prefix``)."""
        cfg = self.model.config
        B, N = x.shape[0], self.model._num_tokens()
        out = np.empty((B, cfg.num_prefix_tokens if prefix_only else N, cfg.embed_dim), x.dtype)
        threads = self.pool.num_threads
        whole = threads * (B // threads)                   # images that go whole to a thread
        with self.blas.limit(1):  # never wake OpenBLAS's own threads: they would spin on the pool's cores
            # once per forward, not per group of images
            self.biases = [(self._q_bias(i), self._proj_bias(i)) for i in range(cfg.depth)]
            if whole:
                self.pool.run(lambda lo, hi: self._share(x[lo:hi], out[lo:hi], prefix_only), whole,
                              min_rows=whole // threads)
            if whole < B:
                rest = self._buffers(B - whole, N, x.dtype)
                self._images(x[whole:], out[whole:], self.pool.run, rest, prefix_only)
        return out

    def _share(self, x, out, prefix_only):
        """One thread's images, a group of about GROUP_ROWS token rows at a time, on this thread only."""
        B, N = x.shape[0], self.model._num_tokens()
        groups = min(B, -(-B * N // GROUP_ROWS))                      # as few groups as fit ...
        bounds = [B * g // groups for g in range(groups + 1)]         # ... of near-equal size
        buffers = self._buffers(-(-B // groups), N, x.dtype)          # reused by every group
        for lo, hi in zip(bounds, bounds[1:]):
            self._images(x[lo:hi], out[lo:hi], _on_this_thread, buffers, prefix_only)

    def _buffers(self, B, N, dtype):
        """Room for B images' activations: residual stream, LayerNorm out, qkv, attention, MLP."""
        cfg, M = self.model.config, B * N
        D = cfg.embed_dim
        return [np.empty((M, width), dtype) for width in (D, D, 3 * D, D, cfg.mlp_hidden)]

    def _images(self, x, out, run, buffers, prefix_only):
        """Features of images ``x`` into ``out`` (B, N or P, D); ``run(fn, n, min_rows)`` calls
        fn(lo, hi) over slices of range(n), on the pool or on this thread."""
        cfg, p = self.model.config, self.model.params
        B, N = x.shape[0], self.model._num_tokens()
        h, ln, qkv, att, mlp = (b[:B * N] for b in buffers)
        self._embed(x, h, run)
        for i in range(cfg.depth - 1):
            self._block(i, h, ln, qkv, att, mlp, B, N, run)
        if prefix_only:
            h = self._last_block_for_prefix(cfg.depth - 1, h, ln, qkv, att, mlp, B, N, run)
        else:
            self._block(cfg.depth - 1, h, ln, qkv, att, mlp, B, N, run)
        final = out.reshape(h.shape)
        self._rows(lambda lo, hi: layernorm_rows(h[lo:hi], p["norm.weight"], p["norm.bias"], cfg.norm_eps,
                                                 final[lo:hi]), h.shape[0], run)

    def _rows(self, fn, n, run):
        """Run fn(lo, hi) over ``n`` rows in cache-sized blocks, through ``run``."""
        def worker(lo, hi):
            for s in range(lo, hi, ROW_BLOCK):
                fn(s, min(s + ROW_BLOCK, hi))
        run(worker, n, min_rows=ROW_BLOCK)

    def _embed(self, x, h, run):
        """Token rows h (B*N, D): patch embedding, prefix tokens before the patches, plus the
        position embedding."""
        p, cfg = self.model.params, self.model.config
        B, n_prefix, D = x.shape[0], cfg.num_prefix_tokens, cfg.embed_dim
        patches = np.ascontiguousarray(patchify(x, cfg.patch_size))
        patches = patches.reshape(-1, patches.shape[-1])
        weight_t = p["patch_embed.proj.weight"].reshape(D, -1).T
        tokens = np.empty((patches.shape[0], D), x.dtype)
        run(lambda lo, hi: np.matmul(patches[lo:hi], weight_t, out=tokens[lo:hi]), patches.shape[0], min_rows=1)
        h3 = h.reshape(B, -1, D)
        h3[:, n_prefix:] = tokens.reshape(B, -1, D)
        h3[:, n_prefix:] += p["patch_embed.proj.bias"]
        for i, name in enumerate(n for n in ("cls_token", "dist_token") if n in p):
            h3[:, i] = p[name][0, 0]
        h3 += p["pos_embed"]

    def _block(self, i, h, ln, qkv, att, mlp, B, N, run):
        """One encoder block in three stages, each run through ``run``: LayerNorm + qkv; attention;
        projection, residual, LayerNorm, MLP, residual.  A slice of rows goes through a stage's
        LayerNorm, product and elementwise work in one call, while its rows are still in cache."""
        qkv_w = self.model.params[f"blocks.{i}.attn.qkv.weight"].T
        self._norm_and_project(i, h, ln, qkv_w, self.biases[i][0], qkv, run)
        q5 = qkv.reshape(B, N, 3, -1)
        self._attention_heads(q5[:, :, 0], q5[:, :, 1], q5[:, :, 2], att, run)
        self._after_attention(i, h, ln, att, mlp, run)

    def _last_block_for_prefix(self, i, h, ln, qkv, att, mlp, B, N, run):
        """The last block when the head reads only the P prefix tokens (class, distillation): k and
        v for every token, but q, attention, projection and MLP for the prefix rows alone, since
        nothing reads what the block makes of the other rows (about 5/6 of a block's products
        skipped).  Returns those rows of the residual stream, (B*P, D)."""
        P, D = self.model.config.num_prefix_tokens, h.shape[1]
        p, b = self.model.params, f"blocks.{i}."
        q_bias = self.biases[i][0]
        kv = qkv[:, :2 * D]                                                   # (M, 2D) scratch
        self._norm_and_project(i, h, ln, p[b + "attn.qkv.weight"][D:].T, None, kv, run)
        prefix = lambda a: np.ascontiguousarray(a.reshape(B, N, -1)[:, :P].reshape(B * P, -1))
        q = prefix(ln) @ p[b + "attn.qkv.weight"][:D].T                       # (B*P, D)
        if q_bias is not None:
            q += q_bias
        h_prefix, att_prefix = prefix(h), att[:B * P]
        kv3 = kv.reshape(B, N, 2, D)
        self._attention_heads(q.reshape(B, P, D), kv3[:, :, 0], kv3[:, :, 1], att_prefix, run)
        self._after_attention(i, h_prefix, ln[:B * P], att_prefix, mlp[:B * P], run)
        return h_prefix

    def _after_attention(self, i, h, ln, att, mlp, run):
        """h += proj(att); h += fc2(GELU(fc1(norm2(h)))), over the rows of h (ln and mlp: scratch)."""
        cfg, p, b = self.model.config, self.model.params, f"blocks.{i}."
        hidden, proj_bias = mlp.shape[1], self.biases[i][1]

        def post_attention(lo, hi):
            tmp = [np.empty((ROW_BLOCK, hidden), h.dtype) for _ in range(3)]
            for s in range(lo, hi, GROUP_ROWS):
                e = min(s + GROUP_ROWS, hi)
                np.matmul(att[s:e], p[b + "attn.proj.weight"].T, out=ln[s:e])
                _add_bias_residual(h[s:e], ln[s:e], proj_bias)
                self._norm(i, 2, h[s:e], ln[s:e])
                m = mlp[s:e]
                np.matmul(ln[s:e], p[b + "mlp.fc1.weight"].T, out=m)
                for r in range(0, e - s, ROW_BLOCK):
                    bias_gelu_rows(m[r:r + ROW_BLOCK], p[b + "mlp.fc1.bias"], cfg.gelu, tmp, self.model.backend)
                np.matmul(m, p[b + "mlp.fc2.weight"].T, out=ln[s:e])
                _add_bias_residual(h[s:e], ln[s:e], p[b + "mlp.fc2.bias"])

        run(post_attention, h.shape[0], min_rows=ROW_BLOCK)

    def _norm_and_project(self, i, h, ln, weight_t, q_bias, out, run):
        """ln = norm1(h), out = ln @ weight_t (+ q_bias on the first D columns), through ``run``."""
        D = h.shape[1]

        def rows(lo, hi):
            for s in range(lo, hi, GROUP_ROWS):
                e = min(s + GROUP_ROWS, hi)
                self._norm(i, 1, h[s:e], ln[s:e])
                np.matmul(ln[s:e], weight_t, out=out[s:e])
                if q_bias is not None:
                    out[s:e, :D] += q_bias

        run(rows, h.shape[0], min_rows=ROW_BLOCK)

    def _norm(self, i, which, x, out):
        """out = norm1 or norm2 of block ``i`` applied to rows x."""
        p, b = self.model.params, f"blocks.{i}.norm{which}."
        layernorm_rows(x, p[b + "weight"], p[b + "bias"], self.model.config.norm_eps, out)

    def _q_bias(self, i):
        """The q third of block ``i``'s qkv bias, or None; the rest is folded away (``_proj_bias``)."""
        qkv_b = self.model.params.get(f"blocks.{i}.attn.qkv.bias")
        return None if qkv_b is None else qkv_b[:self.model.config.embed_dim]

    def _proj_bias(self, i):
        """Block ``i``'s projection bias with the qkv bias's v part folded in, exactly: a v bias
        comes out of attention unchanged (each row of P sums to 1), so proj adds W_proj b_v.  The k
        part needs nothing: it adds q_i . b_k to every score of row i, which softmax ignores."""
        p, b, D = self.model.params, f"blocks.{i}.", self.model.config.embed_dim
        qkv_b, proj_b = p.get(b + "attn.qkv.bias"), p[b + "attn.proj.bias"]
        return proj_b if qkv_b is None else proj_b + p[b + "attn.proj.weight"] @ qkv_b[2 * D:]

    def _attention_heads(self, q, k, v, out, run):
        """out (B*Nq, D) = softmax(q k^T * scale) v per image and head, for queries q (B, Nq, D)
        and keys, values k, v (B, N, D) (views into qkv); (image, head) pairs are split through
        ``run``.  Scores live in an (Nq, N) scratch per call."""
        cfg = self.model.config
        H, Dh = cfg.num_heads, cfg.head_dim
        scale = cfg.scale * LOG2E  # scores in base 2: softmax by exp2, NumPy's faster exponential
        (B, Nq, _), N = q.shape, k.shape[1]
        q4, k4, v4 = (a.reshape(B, -1, H, Dh) for a in (q, k, v))
        o4 = out.reshape(B, Nq, H, Dh)

        def heads(lo, hi):
            s = np.empty((Nq, N), out.dtype)
            qh = np.empty((Nq, Dh), out.dtype)
            o = np.empty((Nq, Dh), out.dtype)
            ones = np.ones(N, out.dtype)
            for j in range(lo, hi):
                bi, h = divmod(j, H)
                np.multiply(q4[bi, :, h], scale, out=qh)
                np.matmul(qh, k4[bi, :, h].T, out=s)
                s -= s.max(axis=1, keepdims=True)
                np.exp2(s, out=s)
                row_sum = s @ ones
                np.matmul(s, v4[bi, :, h], out=o)                            # normalised after the
                np.divide(o, row_sum[:, None], out=o4[bi, :, h])             # product, as the op does
        run(heads, B * H, min_rows=1)


def _on_this_thread(fn, n, min_rows=1):
    """The ``run`` of a thread that owns its images: the whole range in one call."""
    fn(0, n)


def _add_bias_residual(h, y, bias):
    y += bias
    h += y


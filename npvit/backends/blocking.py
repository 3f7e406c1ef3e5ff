"""How the NumPy backend cuts work into pieces: every size constant in one place.

All three were chosen by paired A/B runs in one process (this project's 2-core Zen 3 / Zen 5
machines, float32, ViT-B/16 and S/16 shapes); each was flat within noise over a factor of two
either side, so they are round numbers rather than tuned ones.

* ``BLOCK_ELEMENTS``: elementwise work (LayerNorm, GELU, softmax) runs in blocks of rows whose
  working set stays in a core's L2 cache (512 KiB on Zen 3, 1 MiB on Zen 5): 2**17 float32 elements
  per array, i.e. 170 LayerNorm rows at width 768, 42 GELU rows at 3072, 3 heads of 197 x 197
  attention scores.  Measured before this constant replaced per-op ones: GELU blocks of 16, 32 and
  64 rows, LayerNorm blocks of 128 to 512 rows, 2 to 4 heads per attention block all within noise.
* ``INLINE_BELOW``: arrays smaller than this (elements) are worked on by the calling thread; a
  round trip through the pool costs tens of microseconds, more than a tiny model's ops take (a
  4-block, 32-wide ViT's train step ran 2x slower when every op went through the pool).
* ``GROUP_ROWS``: in an eval forward each thread takes whole images through the network about this
  many token rows at a time: enough rows that every product runs near its peak rate (fc1 on two
  threads: 366 GFLOP/s in 3152-row products, 268 in 256-row ones, Zen 5), few enough that a
  group's activations stay small.  Paired at batch 32: 1024 rows 4% slower, 4096 and 8192 within
  noise.
"""
BLOCK_ELEMENTS = 1 << 17
INLINE_BELOW = 1 << 17
GROUP_ROWS = 2048


def rows_per_block(row_elements):
    """Rows of ``row_elements`` elements that make one cache-sized block (at least one)."""
    return max(1, BLOCK_ELEMENTS // max(1, int(row_elements)))

"""How the NumPy backend cuts work into pieces: every size constant in one place.

The block sizes were chosen by paired A/B runs in one process (this project's 2-core Zen 3 / Zen 5
machines, float32, ViT-B/16, S/16 and Swin-T shapes); BLOCK_ELEMENTS, INLINE_BELOW and GROUP_ROWS
were flat within noise over a factor of two either side, so they are round numbers rather than
tuned ones.  MACS_PER_ELEMENT is an estimate from the two rates it relates.

* ``BLOCK_ELEMENTS``: elementwise work (LayerNorm, GELU, softmax) runs in blocks of rows whose
  working set stays in a core's L2 cache (512 KiB on Zen 3, 1 MiB on Zen 5): 2**17 float32 elements
  per array, i.e. 170 LayerNorm rows at width 768, 42 GELU rows at 3072, 3 heads of 197 x 197
  attention scores.  Measured before this constant replaced per-op ones: GELU blocks of 16, 32 and
  64 rows, LayerNorm blocks of 128 to 512 rows, 2 to 4 heads per attention block all within noise.
* ``INLINE_BELOW``: arrays smaller than this (elements) are worked on by the calling thread; a
  round trip through the pool costs tens of microseconds, more than a tiny model's ops take (a
  4-block, 32-wide ViT's train step ran 2x slower when every op went through the pool).
* ``MACS_PER_ELEMENT``: a matrix product's work, counted in INLINE_BELOW's units, is its
  multiply-adds over this: one core multiplies-and-adds at ~40 G/s in OpenBLAS, while an elementwise
  op of a few passes takes ~1 ns an element.  Counting a product by its output elements alone kept
  Swin-T's last stages (196 and 49 rows, products of 15-230 M multiply-adds) on one thread.
* ``GROUP_ROWS``: in an eval forward each thread takes whole images through the network about this
  many token rows at a time: enough rows that every product runs near its peak rate (fc1 on two
  threads: 366 GFLOP/s in 3152-row products, 268 in 256-row ones, Zen 5), few enough that a
  group's activations stay small.  Paired at batch 32: 1024 rows 4% slower, 4096 and 8192 within
  noise.
* ``COLUMN_SPLIT_ROWS``: a product whose rows would give each thread fewer than this is shared out
  by output columns instead (every thread takes all rows and a slice of the weight): OpenBLAS runs a
  short product faster the more rows it has.  Paired on two threads (Zen 3, Haswell kernels, median
  time ratio columns / rows of 31 rounds): ViT-B/16 at batch 1 (197 rows) 0.88 for qkv, 0.94 for
  fc2; Swin-T's last stages (196 and 49 rows) 0.91 and 0.81-0.84; 784 rows 1.02-1.03, 1576 rows
  1.00, 3136 rows 1.06-1.14.
"""
BLOCK_ELEMENTS = 1 << 17
INLINE_BELOW = 1 << 17
GROUP_ROWS = 2048
MACS_PER_ELEMENT = 32
COLUMN_SPLIT_ROWS = 256


def rows_per_block(row_elements):
    """Rows of ``row_elements`` elements that make one cache-sized block (at least one)."""
    return max(1, BLOCK_ELEMENTS // max(1, int(row_elements)))

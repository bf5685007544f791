"""The numba-fused decode-attention kernel: split-K (flash-decoding) over the KV cache on the CPU.

One decode step: q [B*H, D] (fp32) against K, V [B*H_kv*S, D] stored as fp32, bf16 or fp16
(16-bit words widened in registers) or int8 with a per-token fp32 scale. Work is split into
tasks of (batch, kv head, chunk of tokens); each task streams its K rows once and then its V rows
once, every query head of the GQA group sharing that read, with a numerically safe softmax (max
subtracted), and a final pass merges the chunks by their maxima and sums.

How rows reach the core (staged in L1 or read directly, software prefetch distance) is a run-time
setting, tuned per machine by the probe (probes/cpu_decode.py `tune`): the best one differs by CPU
(see PREFETCH_CHOICES). Performance notes, measured on the 2-core Zen 5 VM unless said:
- rows are indexed as a2[row, j], never sliced out in hot loops: every view costs a call to an
  atomic reference-count update (on an array every thread shares, for K and V);
- the helpers the row loops call are inlined by LLVM (forceinline), not in Numba's IR (inline="always"):
  inlined there, a call that took an array left a reference-count increment and decrement around it
  that Numba could not prune inside the loops: two calls a row to NRT_incref/NRT_decref in the staged
  and prefetching loops, locked adds on the array's count, a cache line every thread shares (staged
  fp32 rows in L2 on the Zen 4 VM, one thread: 37% of the loop's `perf record -e cpu-clock` samples
  in those two functions, 0.5% after). Without
  them, on the Zen 4 VM (H=32, S=16384, 2 threads, every tuning setting interleaved, 24 rounds a dtype
  split by the read beside them, "fast" or "slow", its two memory states; the best setting's median
  fraction of that read): fp32 0.916 against 0.890 fast (22 rounds), int8 0.892 against 0.872 slow (19)
  and 0.616 against 0.563 fast (5), bf16 at group 4 0.884 against 0.882 slow (24); with the rows in L2 (one thread, 7 rounds) fp32 staged 1.15x,
  int8 1.08x, bf16 0.97-0.99x. The prefetch loops' step stays a run-time quotient: as a compile-time
  constant (LLVM then unrolls them) fp32 staged ran 1.4-1.5x faster in L2 but slower from DRAM (best
  setting 0.941 and 0.835 of the read, slow and fast, against 0.973 and 0.882; 30 rounds);
- on Zen 5 one core keeps too few misses in flight while it also computes (fp32 read directly:
  0.65-0.74 of the read kernel's bandwidth, 0.55 without software prefetch); staged in L1 with
  each row's prefetch right before its copy it reached 0.81-0.89 (a burst of the four rows' 32
  prefetches: 0.74-0.81). On the Xeon VM the opposite: fp32 read directly without prefetch
  reached 0.88-0.92, any staging or prefetch 0.50-0.74 (interleaved rounds, both VMs);
- 16-bit rows are widened inside the dot and the update, a vector at a time (vcvtph2ps for fp16,
  a zero-extend and shift for bf16): widening them into L1 first, as fp32 rows are staged, reached
  0.76 of read vs 0.85 for bf16 (10 rounds, memory mostly fast; 0.95 vs 0.96 in a slow spell)
  and 0.87 vs 0.93 for fp16 (8 rounds); it also needs no 2**112 rescaling trick for fp16;
- exp is a vectorisable polynomial (libm's is a scalar call that dominated the int8 cache), and the
  scores' maximum is taken in 16 lanes (row_max): against a running max() on the Xeon VM (model 207,
  9 interleaved rounds, medians) 1.05-1.15x with the rows in L2 (fp32, bf16, int8 at group 1; fp32 and
  bf16 at group 4) and from DRAM 1.01x (fp32), 1.04x (int8), 1.07x (bf16 at group 4, S=1048576);
- int8's loops cost twice a 16-bit cache's per byte, widening its elements: in L2 (S=512, one thread)
  fp16, bf16 and int8 all ran at 34.5-35.0 G elements/s (fp32 28.6), so an int8 byte costs twice the
  work of a 16-bit one and the int8 ceiling of two vCPUs (~69 GB/s) is close to the DRAM read (38-61
  GB/s the same hour); from DRAM int8 reached 0.48-0.62 of the read before the prefetch into L2, and
  prefetching 16-256 rows ahead did not help (0.56-0.60 against 0.62 without). An int16 q against int8
  rows summed in int32 was 0.6x as fast as the float loop (LLVM emitted no vpmaddwd for it); written
  with AVX512-VNNI intrinsics in C (q split into two int16 halves, vpdpwssd, exact int32 sums; four rows
  a step, d=128) the score took 4.9 ns a token against 4.5 for the same loop widening to fp32 and FMAs
  (0.91x, rows in L2, model 207 Xeon, best of 200 runs, twice); without the horizontal sums 1.8 against
  3.4 ns: its two int32 sums a row (one per half) cost what the narrower loop saved. Nor would faster
  loops help much from DRAM now: with 16 rows prefetched into L1 and 128 into L2 (its tuned setting)
  int8 at S=262144 ran at 0.76 of the read beside it, 1.02x faster with the score's arithmetic removed
  (each row's lines still loaded) and 1.06x (0.80 of the read) with the weighted sum's too (7
  interleaved rounds, medians, model 207 Xeon); without the softmax 1.03x, and with none of the three
  (bare loads of each line, prefetched as the kernel does) 1.13x, still 0.78 of the read (7 rounds
  each): the rest of the gap is in the walk over the rows (their loads and prefetches, the per-token
  scale passes), not in the loops' arithmetic; 512-2048 rows into L2 (16-64 into L1: 0.93-0.99x) and
  chunks of 1024-65536 tokens (0.91-0.98x against 16384, 5 rounds) were slower, and prefetching the K
  and V scales into L2 128 or 512 rows ahead in the K pass gained nothing (0.995-1.00x; without the
  scales at all, 3% of int8's bytes, 1.05x; 7 rounds);
- K rows are scored four at a time and V rows consumed eight at a time (each output row loaded
  and stored once per eight);
- a GQA group multiplies the FMAs per cache byte (each row, read once, feeds every head of the
  group from L1), and the loops issue them slowly: on the Xeon VM both the score and the weighted
  sum ran at 35-55 GFLOP/s per thread with the rows in L1 or L2 (a plain Numba dot product 30-39,
  its FMA chains 170-205: the loops are load-bound), so fp32 at group 4 reached 0.69 of the read
  and 16-bit caches less (a profile names such points "below both roofs"). Tried there against
  this code from DRAM (interleaved, 9 rounds, medians; the same code twice differed by up to 7%):
  scoring two heads per pass, every row element loaded and widened once for both (1.3-1.4x on the
  score alone in L2; whole kernel fp16 1.07x, int8 1.00x, fp32 0.97x), and widening 16-bit and
  int8 rows into L1 once for the group (fp16 and int8 1.08x; with both, fp16 1.11x, int8 0.92x);
- on the Zen 4 VM (family 25 model 17) widened rows (16-bit, int8) are scored and summed in tiles
  of four heads x four rows, the 16 sums in registers and each element widened once for the four
  heads: from DRAM at group 4 (H=32/8, S=16384, 2 threads, 7 interleaved rounds, three runs) bf16
  1.11-1.31x, fp16 1.11-1.16x, int8 1.12-1.30x, the score tile giving most of it (1.09-1.12x
  alone). fp32 rows keep the per-head loops: the score tile gained nothing (1.00-1.01x), the sum
  tile lost (0.94x; five of its sixteen weights spilled to the stack), both 0.87-0.94x (on the model
  207 Xeon both tiles for fp32 at group 4 from DRAM: 1.07x without prefetch, 0.995-0.998x with the 8
  or 16 rows ahead its tuning picks there, 9 interleaved rounds; with 8 ahead and 128 into L2, 1.01x,
  15 rounds, the score tile alone 1.00x). With the rows in L2 on the Zen 4 VM the score tile made
  fp32 group 4's tasks 1.07x faster at its tuned setting (staged, 8 rows ahead: 79 against 74
  GFLOP/s) and 1.11x read directly without prefetch, both tiles 0.94x and 1.00x (3 interleaved
  rounds): worth a try where its memory runs faster than those loops (fp32 at group 4 reached 0.51
  of a 54 GB/s read beside it in one profile, 0.81 of a 35 GB/s one in another); a sum tile
  of two heads x eight rows in place of the 4 x 4 ones was slower (bf16 0.93x in L2, 0.98x from
  DRAM; int8 0.99x, 0.96x);
- caches and scratch rows start on 64-byte boundaries (callers allocate the caches so): a vector
  load straddling two lines made the kernel 1.2-1.5x slower in L2;
- a second prefetch, into L2 and 128 rows ahead (prefetcht1), beside the one into L1 keeps the memory
  streaming: on the model 207 Xeon from DRAM (7 interleaved rounds, medians, 16 or 32 rows ahead into
  L1 either way) bf16 at group 1 1.25x (0.79 of the read kernel beside it to 0.99), bf16 at group 4
  1.19x (0.62 to 0.74; at S=1048576 0.60 to 0.72), fp32 1.12x (0.92 to 1.03), int8 1.07x (0.71 to
  0.76), every round faster; 64 and 256 rows ahead gained alike. Bare loads of a bf16 cache's lines in
  the kernel's order reached 1.00 of the read with it, 0.83 with the prefetch into L1 alone. It is a
  tuned setting (PREFETCH_L2_CHOICES): on the Zen 5 VM a prefetch into L2 further ahead once gained 5%
  while memory was slow and lost 23% while it was fast;
- software prefetch is not free: on the Xeon VM (family 6 model 207, at 3.86 GHz) with the rows in L2,
  16 rows ahead took the bf16 score from 21 to 32 cycles a token and the weighted sum from 17 to 29
  (one thread, group 1): a third of the task's in-core time (66 against 44 cycles a token), yet from DRAM it
  made bf16 1.4x faster than none (tuning: 40 against 58 ms at S=65536). Cheaper forms lost there
  (bf16, S=131072, 7 interleaved rounds): one line per row ahead 22.7 GB/s against 25.5 for every
  line, prefetcht1 (into L2) 24.2 against 24.5. Reading rows directly, a step's rows are prefetched as
  one contiguous span under one bounds check (prefetch_ahead), not row by row: with the rows in L2 bf16
  1.26x, int8 1.09x, bf16 at group 4 1.07x, fp32 1.00-1.02x; from DRAM (9 interleaved rounds) while
  memory was fast bf16 1.02x, int8 1.04x, bf16 at group 4 1.02x, every round faster, and while it was
  slow 1.01-1.03x, some rounds slower (0.97-0.98).
- what kept bf16 at group 4 below the read was mostly not its loops: on the model 207 Xeon (H=32/8,
  S=524288, 16 rows prefetched ahead into L1 and none into L2, from DRAM, 15 interleaved rounds,
  medians) the kernel ran 1.03x
  faster with the score tile's arithmetic removed (every cache line of the rows still loaded), 1.10x
  with the weighted sum's removed too and 1.17x without the softmax as well, where the read kernel
  over the same bytes ran 1.53x faster; bare loads of those lines in the kernel's order reached
  0.84-0.86 of the read with 16 to 64 rows prefetched ahead and 0.56 without (a dense sum of each row
  0.59; of the same bytes as fp32 rows 0.69 without prefetch, 0.92 with), while the same chunks in the
  same order summed flat, as the read kernel sums, ran at 0.98-1.00 of it without any prefetch (5
  rounds): the order is not the gap, the row loops are, by how few cache lines they keep in flight
  (each line costs them many more instructions than the read kernel's one load and add), which the
  prefetch into L2 below mostly makes up for. With it (8 rows ahead into L1, 128 into L2; 11 rounds)
  bf16 at group 4 ran at 0.75 of the read: 1.00x with the score tile's arithmetic removed, 1.11x with
  the weighted sum's too, so what is left of its loops' cost is in the weighted sum.
Not adopted: the score's four rows summed in LLVM IR, each row's vector sums reduced together in one
tree of pairwise sums (LLVM reduces each row alone): both compiled in the process, on the model 207
Xeon with the rows in L2 fp32 1.07x, at group 4 1.03x, bf16 1.01x, int8 0.99x (9 interleaved rounds),
and from DRAM fp32 0.995x, at group 4 1.006x, bf16 1.007x (7 rounds).
Not adopted: the softmax's exp taken in blocks of 64 tokens right before the V rows they weight, so
that memory streams meanwhile: on the model 207 Xeon from DRAM (9 interleaved rounds, medians) bf16
at group 4 0.95x, bf16 0.98x, int8 1.00x, fp32 0.98x.
Not adopted: bf16 rows read as 32-bit pairs (the low element by a shift, the high one by a mask,
against a de-interleaved q), half the widening instructions of zero-extend and shift: on the Xeon
VM a 4-row score loop alone over 1 GiB from DRAM (9 interleaved rounds, medians) ran at 25.1 GB/s
against 22.5 GB/s as written here (read 31.8, fp32 rows 34.2): 1.12x on one pass, for a paired copy
of every score and sum loop and a de-interleaved accumulator (in two passes over the row, low
halves then high ones, it was slower: 18.3 GB/s against 22.3 in a second run). Tried again on the
model 207 Xeon with both passes paired at group 1 (q and the output de-interleaved once a task): the
task 1.48x faster with its rows in L2 (38 against 57 cycles a token), yet bf16 from DRAM only 1.04x
(1.01-1.05 by round, S=262144, and 1.01x without prefetch): the gap to the read there is not the loops.
Not adopted: staging only the K rows or only the V rows in L1 (fp32), on the Zen 4 VM, whose fast memory
spells (about 60 GB/s against 36) the staged setting's loops cannot follow (its tasks in L2: 25-26 GFLOP/s
with 4-16 rows ahead into L1 and 128 into L2, K alone staged 33, V alone 35, neither 50): from DRAM, all
rounds in the slow state, both staged 0.92-0.95 of the read beside them, K alone 0.87-0.92, V alone
0.86-0.93 (S=16384, 21 interleaved rounds, three runs); the fast state, where they might gain, did not come.
Tried on Zen 5 and slower from DRAM: online softmax interleaving K and V blocks; prefetch into L2
only, to every other line, or a line (0.51) or half a row (0.24) at a time inside the copy;
dynamic scheduling; a head dim fixed at compile time (faster in L2).
"""

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# the word each cache dtype is stored in; its numba type is what tells `widen` how to convert it
STORAGE = {"fp32": np.float32, "bf16": np.uint16, "fp16": np.int16, "int8": np.int8}
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
# How rows reach the core is chosen per machine (probes/cpu_decode.py tunes it): the best setting
# differs by CPU. From DRAM, fp32 (fractions of the read kernel, interleaved rounds): on the Zen 5
# VM staged in L1 with 24 rows prefetched ahead (0.81-0.89; direct 0.65-0.74); on the Xeon VM
# (480 MiB L3) read directly without software prefetch (0.88-0.90; staged 0.50-0.69). bf16 wanted
# 16 rows ahead on Zen 5 and 4 on the Xeon (0.80 there, 0.51 without); int8 none on Zen 5, 16 on
# the Xeon (0.63 vs 0.44).
PREFETCH_CHOICES = (0, 4, 8, 16, 32)  # rows prefetched ahead into L1 (0: none)
# rows prefetched into L2 far ahead (0: none), beside or instead of L1's: on the model 207 Xeon from DRAM
# 64, 128 and 256 rows gained alike (see the notes above)
PREFETCH_L2_CHOICES = (0, 128)
MAX_CHUNK_TOKENS = 16384  # a task's scores (group x tokens fp32) stay within a 2 MiB L2 up to group 8


def kernel_configs(kind):
    """The (stage rows in L1, rows prefetched ahead into L1, rows prefetched ahead into L2) settings
    worth trying for one cache dtype: staging only for fp32 (16-bit rows widened into L1 were slower
    than widened inside the dot and the update; see the notes above)."""
    return [(stage, ahead, l2_ahead) for stage in ((False, True) if kind == "fp32" else (False,))
            for l2_ahead in PREFETCH_L2_CHOICES for ahead in PREFETCH_CHOICES]


_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


def _prefetcher(locality):
    """An intrinsic f(arr, row, col): software prefetch of arr[row, col] for reading, with LLVM's
    locality hint (3: into every level, prefetcht0 on x86; 2: into L2 and below, prefetcht1)."""

    @intrinsic
    def prefetch(typingctx, arr, row, col):
        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]],
                                           wraparound=False, boundscheck=False)
            i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
            builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, locality), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, row, col), codegen

    return prefetch


_prefetch = _prefetcher(3)
_prefetch_l2 = _prefetcher(2)


@njit(inline="always")
def aligned_rows(rows, cols):
    """An uninitialised float32 [rows, cols] scratch array starting on a 64-byte boundary (numba's
    own allocations are 32-byte aligned; a 64-byte vector load that straddles two cache lines
    costs twice)."""
    raw = np.empty(rows * cols + 16, np.float32)
    first = (-raw.ctypes.data % 64) // 4
    return raw[first:first + rows * cols].reshape((rows, cols))


@njit(forceinline=True)
def prefetch_ahead(a2, first, count, end, ahead, l2_ahead):
    """Prefetch every cache line of the rows first..first + count (contiguous: a C-ordered cache),
    `ahead` rows on into L1 and `l2_ahead` rows on into L2 (0: not into that level), each span only
    where its rows all lie below end: one bounds check for a step's rows, not one per row. One function
    for both levels: a call from here to a helper that took the array left a reference-count pair in
    the row loops (see the notes at the top)."""
    step = max(1, 64 // a2.itemsize)
    if ahead > 0 and first + ahead + count <= end:
        for col in range(0, count * a2.shape[1], step):
            _prefetch(a2, first + ahead, col)
    if l2_ahead > 0 and first + l2_ahead + count <= end:
        for col in range(0, count * a2.shape[1], step):
            _prefetch_l2(a2, first + l2_ahead, col)


def _widen_codegen(word):
    """LLVM code turning one stored element of numba type `word` into a float32, or None."""
    f32 = ir.FloatType()
    if word == types.float32:
        return lambda builder, x: x
    if word == types.int8:
        return lambda builder, x: builder.sitofp(x, f32)
    if word == types.uint16:  # bf16 bits: they become the float's upper half
        return lambda builder, x: builder.bitcast(builder.shl(builder.zext(x, ir.IntType(32)), ir.Constant(ir.IntType(32), 16)), f32)
    if word == types.int16:  # fp16 bits: through LLVM's half type (vcvtph2ps on x86)
        return lambda builder, x: builder.fpext(builder.bitcast(x, ir.HalfType()), f32)
    return None


@intrinsic
def widen(typingctx, x):
    """One stored cache element -> float32, by its storage word (see STORAGE): float32 as is,
    int8 converted, uint16 as bf16 bits, int16 as fp16 bits."""
    convert = _widen_codegen(x)
    if convert is None:
        return None

    def codegen(context, builder, signature, args):
        return convert(builder, args[0])

    return types.float32(x), codegen


def _word_is(word):
    """An intrinsic f(a2): True, as a compile-time constant, if the array's word type is `word`."""

    @intrinsic
    def word_is(typingctx, a2):
        flag = a2.dtype == word

        def codegen(context, builder, signature, args):
            return ir.Constant(ir.IntType(1), flag)

        return types.boolean(a2), codegen

    return word_is


quantised = _word_is(types.int8)  # int8 cache rows carry scales
stageable = _word_is(types.float32)  # only fp32 rows may be staged in L1 (see kernel_configs)


@intrinsic
def _f32_bits(typingctx, x):
    """A float32's bits as uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def _f32_to_fp16_bits(typingctx, x):
    """A float32 rounded to the nearest fp16 (ties to even), as its bits in an int16."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.int16(x), codegen


@njit(fastmath=True, forceinline=True)
def _copy_row(src, row, dst, slot):
    # a plain streaming copy into L1 keeps more misses in flight than loads feeding FMAs directly
    for j in range(dst.shape[1]):
        dst[slot, j] = widen(src[row, j])


@njit(fastmath=True, cache=True)
def exp_nonpositive(x, bits):
    """x[:] = exp(x[:]) for x <= 0, in loops LLVM vectorises.

    Cody-Waite range reduction x = n ln2 + r, a degree-6 Taylor polynomial for e^r on
    |r| <= ln2/2, and 2^n built in the exponent bits of `bits` (an int32 scratch array the size
    of x). Relative error is a few float32 ulps; inputs below -87 flush to 0.
    """
    scale = bits.view(np.float32)
    for i in range(x.shape[0]):
        v = max(x[i], np.float32(-87.0))
        n = np.floor(v * LOG2E + np.float32(0.5))
        r = v - n * LN2_HI - n * LN2_LO
        p = np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        x[i] = p if x[i] > np.float32(-87.0) else np.float32(0.0)
        bits[i] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for i in range(x.shape[0]):
        x[i] = x[i] * scale[i]


@njit(fastmath=True, forceinline=True)
def row_max(a2, row, n):
    """max(a2[row, :n]) for n >= 1, kept in 16 lanes that LLVM vectorises: a running max() is a chain
    of compare-and-selects it leaves serial (3.8 cycles a token against 0.6 on the Xeon VM, where that
    was a ninth of the fp32 task's time with its rows in L2)."""
    lanes = np.empty(16, np.float32)
    for j in range(16):
        lanes[j] = a2[row, 0]
    t = 0
    while t + 16 <= n:
        for j in range(16):
            x = a2[row, t + j]
            lanes[j] = x if x > lanes[j] else lanes[j]
        t += 16
    mx = lanes[0]
    for j in range(1, 16):
        mx = max(mx, lanes[j])
    for i in range(t, n):
        mx = max(mx, a2[row, i])
    return mx


@njit(fastmath=True, forceinline=True)
def _score_tile(q2, qrow, g, rows, first, scores, t):
    """scores[g:g + 4, t:t + 4]: four heads against four rows, the 16 sums in registers, so each
    query and row element is loaded once for the tile, not once per head."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0)
    for j in range(q2.shape[1]):
        q0, q1, q2_, q3 = q2[qrow + g, j], q2[qrow + g + 1, j], q2[qrow + g + 2, j], q2[qrow + g + 3, j]
        r0, r1, r2, r3 = widen(rows[first, j]), widen(rows[first + 1, j]), widen(rows[first + 2, j]), widen(rows[first + 3, j])
        s00 += q0 * r0
        s01 += q0 * r1
        s02 += q0 * r2
        s03 += q0 * r3
        s10 += q1 * r0
        s11 += q1 * r1
        s12 += q1 * r2
        s13 += q1 * r3
        s20 += q2_ * r0
        s21 += q2_ * r1
        s22 += q2_ * r2
        s23 += q2_ * r3
        s30 += q3 * r0
        s31 += q3 * r1
        s32 += q3 * r2
        s33 += q3 * r3
    scores[g, t], scores[g, t + 1], scores[g, t + 2], scores[g, t + 3] = s00, s01, s02, s03
    scores[g + 1, t], scores[g + 1, t + 1], scores[g + 1, t + 2], scores[g + 1, t + 3] = s10, s11, s12, s13
    scores[g + 2, t], scores[g + 2, t + 1], scores[g + 2, t + 2], scores[g + 2, t + 3] = s20, s21, s22, s23
    scores[g + 3, t], scores[g + 3, t + 1], scores[g + 3, t + 2], scores[g + 3, t + 3] = s30, s31, s32, s33


@njit(fastmath=True, forceinline=True)
def _score_four(q2, qrow, group, rows, first, scores, t):
    """scores[g, t:t + 4] = q2[qrow + g] . rows[first:first + 4] for every head of the group (rows:
    the cache itself, or its rows staged in L1). Rows that are widened (16-bit, int8) are scored
    four heads at a time while four remain, each element widened once for the four; fp32 rows
    gain nothing from it (see the notes above)."""
    g0 = 0
    if not stageable(rows):  # a compile-time constant: False for float32 rows
        while g0 + 4 <= group:
            _score_tile(q2, qrow, g0, rows, first, scores, t)
            g0 += 4
    for g in range(g0, group):
        sa = np.float32(0)
        sb = np.float32(0)
        sc = np.float32(0)
        sd = np.float32(0)
        for j in range(q2.shape[1]):
            qj = q2[qrow + g, j]
            sa += qj * widen(rows[first, j])
            sb += qj * widen(rows[first + 1, j])
            sc += qj * widen(rows[first + 2, j])
            sd += qj * widen(rows[first + 3, j])
        scores[g, t], scores[g, t + 1], scores[g, t + 2], scores[g, t + 3] = sa, sb, sc, sd


@njit(fastmath=True, forceinline=True)
def _add_tile(rows, first, g, scores, t, acc):
    """acc[g:g + 4] += scores[g:g + 4, t:t + 4] x rows[first:first + 4]: each row element loaded
    once for four heads."""
    p00, p01, p02, p03 = scores[g, t], scores[g, t + 1], scores[g, t + 2], scores[g, t + 3]
    p10, p11, p12, p13 = scores[g + 1, t], scores[g + 1, t + 1], scores[g + 1, t + 2], scores[g + 1, t + 3]
    p20, p21, p22, p23 = scores[g + 2, t], scores[g + 2, t + 1], scores[g + 2, t + 2], scores[g + 2, t + 3]
    p30, p31, p32, p33 = scores[g + 3, t], scores[g + 3, t + 1], scores[g + 3, t + 2], scores[g + 3, t + 3]
    for j in range(acc.shape[1]):
        r0, r1, r2, r3 = widen(rows[first, j]), widen(rows[first + 1, j]), widen(rows[first + 2, j]), widen(rows[first + 3, j])
        acc[g, j] += p00 * r0 + p01 * r1 + p02 * r2 + p03 * r3
        acc[g + 1, j] += p10 * r0 + p11 * r1 + p12 * r2 + p13 * r3
        acc[g + 2, j] += p20 * r0 + p21 * r1 + p22 * r2 + p23 * r3
        acc[g + 3, j] += p30 * r0 + p31 * r1 + p32 * r2 + p33 * r3


@njit(fastmath=True, forceinline=True)
def _add_eight(rows, first, group, scores, t, acc):
    """acc[g] += sum of scores[g, t + i] x rows[first + i] for i < 8, every head of the group;
    widened rows four heads at a time while four remain, as in _score_four."""
    g0 = 0
    if not stageable(rows):
        while g0 + 4 <= group:
            _add_tile(rows, first, g0, scores, t, acc)
            _add_tile(rows, first + 4, g0, scores, t + 4, acc)
            g0 += 4
    for g in range(g0, group):
        p0, p1, p2, p3 = scores[g, t], scores[g, t + 1], scores[g, t + 2], scores[g, t + 3]
        p4, p5, p6, p7 = scores[g, t + 4], scores[g, t + 5], scores[g, t + 6], scores[g, t + 7]
        for j in range(acc.shape[1]):
            acc[g, j] += (p0 * widen(rows[first, j]) + p1 * widen(rows[first + 1, j])
                          + p2 * widen(rows[first + 2, j]) + p3 * widen(rows[first + 3, j])
                          + p4 * widen(rows[first + 4, j]) + p5 * widen(rows[first + 5, j])
                          + p6 * widen(rows[first + 6, j]) + p7 * widen(rows[first + 7, j]))


@njit(fastmath=True, inline="always")
def _scores(q2, qrow, group, k2, r0, r1, scores, buf, stage, prefetching, ahead, l2_ahead):
    """scores[g, t] = q2[qrow + g] . K row r0 + t for the rows r0..r1, four rows a step, each read
    once for every head of the group, prefetching `ahead` rows ahead into L1 and `l2_ahead` into L2
    (0: none). `prefetching` (either) is a constant where it is inlined (_chunk): the loops with and
    without prefetch are separate copies."""
    d = q2.shape[1]
    n = r1 - r0
    t = 0
    while t + 4 <= n:
        r = r0 + t
        if stage:
            for a in range(4):  # each row's prefetch right before its copy, not all four at once
                if prefetching:
                    prefetch_ahead(k2, r + a, 1, r1, ahead, l2_ahead)
                _copy_row(k2, r + a, buf, a)
            _score_four(q2, qrow, group, buf, 0, scores, t)
        else:
            if prefetching:
                prefetch_ahead(k2, r, 4, r1, ahead, l2_ahead)
            _score_four(q2, qrow, group, k2, r, scores, t)
        t += 4
    while t < n:
        r = r0 + t
        for g in range(group):
            s = np.float32(0)
            for j in range(d):
                s += q2[qrow + g, j] * widen(k2[r, j])
            scores[g, t] = s
        t += 1


@njit(fastmath=True, inline="always")
def _weighted_sum(v2, r0, r1, group, scores, po, prow, buf, stage, prefetching, ahead, l2_ahead):
    """po[prow + g] = sum over the rows r0..r1 of scores[g, t] x V row r0 + t, eight rows a step,
    summed in a fresh local array (LLVM then knows it aliases no V row: accumulating eight rows
    straight into po ran at 0.83 of the read kernel's bandwidth, locally 0.905, four rows into po
    0.87; fp32 from DRAM on the Xeon VM, 8 interleaved rounds); the prefetch settings as in _scores."""
    d = v2.shape[1]
    n = r1 - r0
    acc = np.zeros((group, d), np.float32)
    t = 0
    while t + 8 <= n:
        r = r0 + t
        if stage:
            for a in range(8):
                if prefetching:
                    prefetch_ahead(v2, r + a, 1, r1, ahead, l2_ahead)
                _copy_row(v2, r + a, buf, a)
            _add_eight(buf, 0, group, scores, t, acc)
        else:
            if prefetching:
                prefetch_ahead(v2, r, 8, r1, ahead, l2_ahead)
            _add_eight(v2, r, group, scores, t, acc)
        t += 8
    while t < n:
        r = r0 + t
        for g in range(group):
            p = scores[g, t]
            for j in range(d):
                acc[g, j] += p * widen(v2[r, j])
        t += 1
    for g in range(group):
        for j in range(d):
            po[prow + g, j] = acc[g, j]


@njit(fastmath=True, cache=True)
def _chunk(q2, qrow, group, k2, v2, kscale, vscale, r0, r1, scale, scores, po, pm, pl, prow, buf, ebits,
          stage, ahead, l2_ahead):
    """One task: scores of rows r0..r1 for every head of the group, their softmax numerators, and
    the weighted sum of V rows into po, with the maximum (pm) and sum (pl) the merge needs.
    stage: copy (widened) rows to L1 before use; ahead: rows prefetched ahead into L1, l2_ahead: into
    L2 (0: none). With and
    without prefetch run separate copies of the loops: a branch on it inside them cost fp32 8% of
    its DRAM bandwidth on the Xeon VM (0.80 vs 0.87 of read, 10 interleaved rounds); staging's
    branch cost nothing measurable, nor, inside the prefetching copy, a branch a step on each
    distance (against a copy for each of the four combinations, on the model 207 Xeon from DRAM:
    0.99-1.01x, 7 interleaved rounds, at half the compile time: 15 s against 29 for bf16)."""
    scaled = quantised(k2)
    n = r1 - r0
    stage = stage and stageable(k2)  # stageable: a constant, False but for fp32 (their staged code is dead)
    if ahead > 0 or l2_ahead > 0:
        _scores(q2, qrow, group, k2, r0, r1, scores, buf, stage, True, ahead, l2_ahead)
    else:
        _scores(q2, qrow, group, k2, r0, r1, scores, buf, stage, False, 0, 0)
    for g in range(group):  # score scale (and int8 key scales)
        for t in range(n):
            scores[g, t] *= scale * kscale[r0 + t] if scaled else scale
    for g in range(group):  # softmax numerators, max subtracted; the merge divides later
        mx = row_max(scores, g, n)
        for t in range(n):
            scores[g, t] -= mx
        exp_nonpositive(scores[g, :n], ebits[:n])
        total = np.float32(0)
        for t in range(n):
            total += scores[g, t]
        pm[prow + g] = mx
        pl[prow + g] = total
        if scaled:
            for t in range(n):
                scores[g, t] *= vscale[r0 + t]
    if ahead > 0 or l2_ahead > 0:
        _weighted_sum(v2, r0, r1, group, scores, po, prow, buf, stage, True, ahead, l2_ahead)
    else:
        _weighted_sum(v2, r0, r1, group, scores, po, prow, buf, stage, False, 0, 0)


# The two kernels that run the tasks are compiled in each process, never loaded from Numba's disk cache
# (_chunk and the helpers it inlines are, for the bitcode the two link): on the model 207 Xeon the same
# machine code loaded from the cache ran slower than when compiled in the process, byte for byte the
# same but for its absolute addresses, side by side in one process (a serial loop over _chunk, one
# thread, fp32 rows in L2: 47.0-47.4 against 62.3-63.1 GB/s, two runs), and from the harness (`harness
# probe decode --quick`, fp32 at S=262144: loops 108 against 78 ms; at group 4 0.80 against 0.88 of the
# read beside it; int8 alike both ways). Why is not known; the gap came with the reference-count calls
# the row loops made before (see the notes at the top): with them gone, on the Zen 4 VM (the same serial
# loop, 7 interleaved rounds, three runs) loaded code ran at 0.96-1.03 of compiled with prefetches,
# against 0.87-0.94 with them (eight runs; one of them 1.01, one setting once 1.08). It costs compile time in every run: 5.7 s for fp32's
# task_loops (with _chunk loaded from the cache).
@njit(parallel=True, fastmath=True)
def task_loops(q2, group, k2, v2, kscale, vscale, tasks, stage, ahead, l2_ahead, loops, po, pm, pl):
    """`loops` runs of `tasks` tasks at once, as decode_kernel runs each: task w over its own block of
    the rows of k2 and v2 (rows w*n..(w+1)*n, n = rows / tasks) and the query heads w*group.., its
    partial output in po, pm, pl at those heads. The in-core timing: with as many tasks as threads
    (Numba's static schedule gives each thread one) and each block in its core's L2, the loops run
    on every thread at once, with no memory to wait for."""
    n, d = k2.shape[0] // tasks, k2.shape[1]
    scale = np.float32(1.0 / np.sqrt(d))
    for w in prange(tasks):
        scores = np.empty((group, n), np.float32)
        buf = aligned_rows(8, d)
        ebits = np.empty(n, np.int32)
        first = w * n  # an int64, as decode_kernel's row numbers: _chunk reuses its compiled code (10 s a dtype)
        for _ in range(loops):
            _chunk(q2, w * group, group, k2, v2, kscale, vscale, first, first + n, scale, scores, po, pm, pl,
                   w * group, buf, ebits, stage, ahead, l2_ahead)


@njit(parallel=True, fastmath=True)  # compiled in each process: see task_loops
def decode_kernel(q2, k2, v2, kscale, vscale, batch, heads, kv_heads, seq_len, chunk_len, stage, ahead, l2_ahead,
                  out2):
    """out2 [B*H, D] = softmax(q k^T / sqrt(D)) v for one decode step, split over (batch, kv head,
    chunk of chunk_len tokens) tasks in parallel; the cache dtype comes from the arrays' word type
    (STORAGE), int8 with per-row scales kscale/vscale (unread otherwise)."""
    d = q2.shape[1]
    group = heads // kv_heads
    chunks = (seq_len + chunk_len - 1) // chunk_len
    tasks = batch * kv_heads * chunks
    po = aligned_rows(tasks * group, d)
    pm = np.empty(tasks * group, np.float32)
    pl = np.empty(tasks * group, np.float32)
    scale = np.float32(1.0 / np.sqrt(d))
    for task in prange(tasks):
        bh = task // chunks
        s0 = (task % chunks) * chunk_len
        s1 = min(seq_len, s0 + chunk_len)
        b, h = bh // kv_heads, bh % kv_heads
        scores = np.empty((group, s1 - s0), np.float32)
        buf = aligned_rows(8, d)  # staged rows: four K or eight V
        ebits = np.empty(s1 - s0, np.int32)
        _chunk(q2, b * heads + h * group, group, k2, v2, kscale, vscale, bh * seq_len + s0,
           bh * seq_len + s1, scale, scores, po, pm, pl, task * group, buf, ebits, stage, ahead, l2_ahead)
    for row in range(batch * heads):  # merge the chunks of each query head (serial: a few microseconds)
        b, hq = row // heads, row % heads
        h, g = hq // group, hq % group
        first = (b * kv_heads + h) * chunks
        mx = pm[first * group + g]
        for c in range(1, chunks):
            mx = max(mx, pm[(first + c) * group + g])
        total = np.float32(0)
        for j in range(d):
            out2[row, j] = 0
        for c in range(chunks):
            i = (first + c) * group + g
            w = np.exp(pm[i] - mx)
            total += w * pl[i]
            for j in range(d):
                out2[row, j] += w * po[i, j]
        inv = np.float32(1) / total
        for j in range(d):
            out2[row, j] *= inv


def chunk_length(batch, kv_heads, seq_len, threads):
    """Tokens per task: enough tasks to balance the threads, long enough to amortise the merge and
    the switch between K and V rows (fp32 from DRAM on the Xeon VM, 8 interleaved rounds: 0.841,
    0.856 and 0.860 of read at 4096, 16384 and 65536 tokens)."""
    per_head_tasks = max(1, -(-4 * threads // (batch * kv_heads)))
    return max(64, min(MAX_CHUNK_TOKENS, -(-seq_len // per_head_tasks)))

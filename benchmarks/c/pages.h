/* Arrays for the C references on the pages numpy gives the harness's arrays: numpy asks the kernel
 * for transparent huge pages on large arrays (madvise), which under THP's 'madvise' mode a plain
 * malloc does not get (on the model 167 Xeon VM a C sum read DRAM at 31.2-31.8 GB/s on 4 KiB pages,
 * 35.2-37.9 on 2 MiB ones). */
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE_BYTES (2L << 20)

static double *huge_array(long n) {
    size_t bytes = ((n * sizeof(double) + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES;
    double *a = aligned_alloc(HUGE_PAGE_BYTES, bytes);
    if (a) madvise(a, bytes, MADV_HUGEPAGE);  /* advice only: where THP is off the pages stay small */
    return a;
}

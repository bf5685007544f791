// The CUDA built-ins probes/cuda/*.cu use, on the CPU, so the test suite can run those kernels
// (tests/cuda_emulator.py compiles them with g++ against this header). Every thread of a block is
// a fiber on one OS thread (started with makecontext, switched with _setjmp/_longjmp, which save no
// signal mask: no system call per switch); blocks run one after another. __syncthreads and the warp
// shuffles are barriers that the scheduler releases once every thread of the block (or warp) has
// reached them, so a divergent barrier or shuffle is reported, not hung. Warps and lanes run in
// pseudo-random orders, so a missing barrier shows as a wrong result. Dynamic shared memory
// starts as 0x7f bytes (3.4e38 as floats: unlike NaN, no fmaxf skips it) and writes past its launch
// size are reported; an __ldg read must be aligned to its size and lie inside an array argument.
#pragma once
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time: a static local is that block's

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct __half { unsigned short bits; };
struct __nv_bfloat16 { unsigned short bits; };
struct __half2 { _Float16 x, y; };

namespace cuda_cpu {

enum State { READY, AT_BLOCK, AT_WARP, DONE };
constexpr int WARP = 32;
constexpr size_t STACK_BYTES = 64 << 10;
constexpr size_t SHARED_GUARD = 256;
constexpr unsigned char SHARED_POISON = 0x7f;
constexpr size_t MAX_SHARED = 48 << 10;  // a launch's dynamic shared memory without an opt-in (the GPU counts static too)
constexpr unsigned long long SEED = 0x9E3779B97F4A7C15ull;

struct Fiber {
    ucontext_t start;  // the entry, until the fiber first runs
    jmp_buf resume;    // where it yielded
    bool started;
    State state;
    std::vector<char> stack;
};

inline uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::vector<Fiber> fibers;
inline std::vector<unsigned long long> lanes[2];  // shuffle slots per thread, used alternately
inline std::vector<int> parity;                     // which slots each thread's next shuffle uses
inline std::vector<unsigned char> shared_mem;
inline int current = 0;
inline jmp_buf scheduler;
inline std::vector<int> order;  // lanes of the running warp, shuffled
inline unsigned long long rng = SEED;  // reset by every launch: a failing schedule repeats

inline unsigned random_below(unsigned n) {  // xorshift64
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

inline std::function<void()> body;
inline std::string error;
inline std::vector<std::pair<std::uintptr_t, std::uintptr_t>> arrays;  // this launch's array arguments [begin, end)

inline void fail(const std::string& what) {
    if (error.empty()) error = what;
}

inline void yield(State s) {
    fibers[current].state = s;
    if (!_setjmp(fibers[current].resume)) _longjmp(scheduler, 1);
}

inline void entry() {
    body();
    fibers[current].state = DONE;
    _longjmp(scheduler, 1);  // never returns: its start context is not resumed
}

inline void set_index(int linear) {
    thread_idx = {linear % block_dim.x, linear / block_dim.x % block_dim.y, linear / (block_dim.x * block_dim.y)};
}

// Switch to fiber i until it yields or exits.
inline void run_fiber(int i) {
    current = i;
    set_index(i);
    if (!_setjmp(scheduler)) {
        if (fibers[i].started) _longjmp(fibers[i].resume, 1);
        fibers[i].started = true;
        ucontext_t here;
        swapcontext(&here, &fibers[i].start);  // comes back by _longjmp, never through `here`
    }
}

// Run warp [w, end) until none of its threads can go on: each lane in a random order, a warp
// barrier released as soon as all its lanes wait there.
inline void run_warp(int w, int end) {
    for (;;) {
        bool ran = false;
        const int lanes_n = end - w;
        for (int j = 0; j < lanes_n; j++) order[j] = w + j;
        for (int j = lanes_n - 1; j > 0; j--) std::swap(order[j], order[random_below(j + 1)]);
        for (int j = 0; j < lanes_n; j++)
            if (fibers[order[j]].state == READY) run_fiber(order[j]), ran = true;
        int waiting = 0;
        for (int i = w; i < end; i++) waiting += fibers[i].state == AT_WARP;
        if (waiting == lanes_n) {
            for (int i = w; i < end; i++) fibers[i].state = READY;
        } else if (!ran) {
            return;
        }
    }
}

// Run every thread of one block to completion; false (and `error`) on a barrier some never reach.
// A random warp runs until it blocks at __syncthreads (or exits), then another: warps drift as
// far apart as the barriers allow, so a missing one shows as a wrong result.
inline bool run_block(int n) {
    fibers.resize(n);
    lanes[0].assign(n, 0);
    lanes[1].assign(n, 0);
    parity.assign(n, 0);
    order.resize(WARP);
    for (int i = 0; i < n; i++) {
        Fiber& f = fibers[i];
        f.stack.resize(STACK_BYTES);
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = f.stack.data();
        f.start.uc_stack.ss_size = f.stack.size();
        f.start.uc_link = nullptr;
        makecontext(&f.start, entry, 0);
        f.started = false;
        f.state = READY;
    }
    std::vector<int> ready;
    for (;;) {
        ready.clear();
        for (int w = 0; w < n; w += WARP)
            for (int i = w; i < n && i < w + WARP; i++)
                if (fibers[i].state == READY) {
                    ready.push_back(w);
                    break;
                }
        if (!ready.empty()) {
            const int w = ready[random_below((unsigned)ready.size())];
            run_warp(w, w + WARP < n ? w + WARP : n);
            continue;
        }
        int done = 0, at_block = 0;
        for (auto& f : fibers) done += f.state == DONE, at_block += f.state == AT_BLOCK;
        if (done == n) return true;
        if (at_block == n) {
            for (auto& f : fibers) f.state = READY;
            continue;
        }
        fail("deadlock: " + std::to_string(at_block) + " of " + std::to_string(n) + " threads wait at __syncthreads, " +
             std::to_string(done) + " have exited and the rest wait at a warp shuffle their warp does not all reach");
        return false;
    }
}

template <class T> T shuffle_from(unsigned mask, T x, int src_lane) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of at most 8 bytes");
    if (mask != 0xffffffffu) fail("a shuffle with a partial mask (the probes' kernels use full warps)");
    // two sets of slots used in turn: a lane can write its next value before a slower lane has
    // read this one, but not its next-but-one (that needs every lane past the next barrier)
    const int me = current, base = me - me % WARP, p = parity[me];
    parity[me] ^= 1;
    std::memcpy(&lanes[p][me], &x, sizeof(T));
    yield(AT_WARP);  // every lane has written its value
    T y;
    std::memcpy(&y, &lanes[p][base + src_lane], sizeof(T));
    return y;
}

template <class... A, size_t... I>
void invoke_at(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::decay_t<A>*>(args[I])...);
}

template <class... A> void invoke(void (*kernel)(A...), void** args) {
    invoke_at(kernel, args, std::index_sequence_for<A...>{});
}

template <class... A> int arity(void (*)(A...)) { return sizeof...(A); }

template <class... A> const long long* argument_sizes(void (*)(A...)) {
    static const long long sizes[] = {(long long)sizeof(A)..., 0};
    return sizes;
}

struct Kernel {
    const char* name;
    void (*call)(void**);
    int arity;
    const long long* sizes;
};

// A launch of `k` as cudaLaunchKernel would make it; "" or the first thing that went wrong.
inline const char* launch(const Kernel& k, dim3 grid, dim3 block, size_t shared, void** args, const long long* sizes,
                          int nargs, const unsigned long long* bounds, int narrays) {
    static std::string message;
    error.clear();
    arrays.clear();
    for (int i = 0; i < narrays; i++) arrays.emplace_back(bounds[2 * i], bounds[2 * i + 1]);
    rng = SEED;
    if (nargs != k.arity) fail(std::string(k.name) + ": launched with " + std::to_string(nargs) + " arguments, takes " +
                               std::to_string(k.arity));
    for (int i = 0; i < nargs && i < k.arity && error.empty(); i++)
        if (sizes[i] != k.sizes[i])
            fail(std::string(k.name) + ": argument " + std::to_string(i) + " is " + std::to_string(sizes[i]) +
                 " bytes, the kernel takes " + std::to_string(k.sizes[i]));
    const long long threads = (long long)block.x * block.y * block.z;
    if (threads < 1 || threads > 1024) fail("block of " + std::to_string(threads) + " threads (1 to 1024)");
    if (shared > MAX_SHARED) fail("dynamic shared memory " + std::to_string(shared) + " bytes exceeds 48 KB");
    grid_dim = grid;
    block_dim = block;
    for (unsigned z = 0; z < grid.z && error.empty(); z++)
        for (unsigned y = 0; y < grid.y && error.empty(); y++)
            for (unsigned x = 0; x < grid.x && error.empty(); x++) {
                block_idx = {x, y, z};
                shared_mem.assign(shared + SHARED_GUARD, SHARED_POISON);
                body = [&] { k.call(args); };
                if (!run_block((int)threads)) break;
                for (size_t i = shared; i < shared + SHARED_GUARD; i++)
                    if (shared_mem[i] != SHARED_POISON) {
                        fail("block wrote shared memory past its dynamic size (" + std::to_string(shared) + " bytes)");
                        break;
                    }
            }
    message = error;
    return message.c_str();
}

inline float half_bits_to_float(unsigned short bits) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return (float)h;
}

}  // namespace cuda_cpu

#define threadIdx cuda_cpu::thread_idx
#define blockIdx cuda_cpu::block_idx
#define blockDim cuda_cpu::block_dim
#define gridDim cuda_cpu::grid_dim

inline void __syncthreads() { cuda_cpu::yield(cuda_cpu::AT_BLOCK); }
template <class T> T __shfl_xor_sync(unsigned mask, T x, int o) {
    return cuda_cpu::shuffle_from(mask, x, (cuda_cpu::current % cuda_cpu::WARP) ^ o);
}
template <class T> T __shfl_down_sync(unsigned mask, T x, unsigned d) {
    const int lane = cuda_cpu::current % cuda_cpu::WARP;
    return cuda_cpu::shuffle_from(mask, x, lane + (int)d < cuda_cpu::WARP ? lane + (int)d : lane);
}
// A read through the read-only cache: aligned to its size (the GPU faults otherwise) and inside one
// of the launch's array arguments (a read past an array is reported, not read).
template <class T> T __ldg(const T* p) {
    const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(p);
    T x{};
    if (at % alignof(T)) {
        cuda_cpu::fail("misaligned " + std::to_string(sizeof(T)) + "-byte load");
        return x;
    }
    for (const auto& [begin, end] : cuda_cpu::arrays)
        if (begin <= at && at + sizeof(T) <= end) {
            std::memcpy(&x, p, sizeof(T));
            return x;
        }
    cuda_cpu::fail(std::to_string(sizeof(T)) + "-byte load outside every array argument");
    return x;
}
template <class T> T __ldcg(const T* p) { return __ldg(p); }  // through L2 only: the same checks
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float atomicAdd(float* p, float v) {  // one fiber runs at a time: a plain add is atomic
    const float old = *p;
    *p = old + v;
    return old;
}
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int min(int a, int b) { return a < b ? a : b; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline __half __ushort_as_half(unsigned short bits) { return {bits}; }
inline float __half2float(__half h) { return cuda_cpu::half_bits_to_float(h.bits); }
inline __half2 __float2half2_rn(float f) { return {(_Float16)f, (_Float16)f}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {  // half x half is exact in double: one rounding
    return {(_Float16)((double)a.x * (double)b.x + (double)c.x), (_Float16)((double)a.y * (double)b.y + (double)c.y)};
}
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }

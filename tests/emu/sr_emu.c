/*
 * A CPU emulator for the kernels of src/ops/kernels.cu (see sr_emu.h), as a shared library:
 *
 *   cc -std=gnu11 -O1 -shared -fPIC -Isrc/ops -Itests/emu tests/emu/sr_emu.c -o libsr_emu.so -lm
 *
 * - sr_emu_launch(name, grid, block, params, size, reverse) runs a kernel over its whole grid.
 *   `params` is the kernel's parameter struct as the Rust side lays it out (`size` must equal the
 *   C struct's size). With `reverse` set, blocks and the threads within each block are scheduled
 *   in the opposite order: a kernel free of races gives bit-identical results both ways (a read
 *   of shared memory that misses a __syncthreads sees another value in one of the two orders).
 * - A thread that returns while others of its block wait at __syncthreads, or threads waiting at
 *   different __syncthreads calls, are reported as errors (a hang or undefined behaviour on a
 *   GPU).
 * - sr_emu_alloc(bytes) maps a buffer that ends exactly at an inaccessible guard page, so a read
 *   or write past its end faults; its bytes start as 0xff (NaN as floats).
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "sr_emu.h"

sr_emu_dim3 sr_emu_thread_idx, sr_emu_block_idx, sr_emu_block_dim, sr_emu_grid_dim;

#include "kernels.cu"

typedef void (*sr_tramp)(const void *);

/* The trampoline type-checks each kernel against its parameter struct. */
#define SR_ENTRY(name, T)                                                                          \
    static void name##_tramp(const void *p) { name(*(const T *)p); }
SR_ENTRY(sr_bn_stats, SrBnStats)
SR_ENTRY(sr_bn_forward, SrBnForward)
SR_ENTRY(sr_bn_backward_reduce, SrBnBackwardReduce)
SR_ENTRY(sr_bn_backward_apply, SrBnBackwardApply)
SR_ENTRY(sr_pool_forward, SrPoolForward)
SR_ENTRY(sr_pool_backward, SrPoolBackward)
SR_ENTRY(sr_gap_forward, SrGapForward)
SR_ENTRY(sr_gap_backward, SrGapBackward)
SR_ENTRY(sr_add_relu_forward, SrAddRelu)
SR_ENTRY(sr_add_relu_backward, SrAddReluBackward)
SR_ENTRY(sr_count_nonfinite, SrCountNonfinite)

static const struct {
    const char *name;
    sr_tramp fn;
    size_t size;
} KERNELS[] = {
#define SR_ROW(name, T) {#name, name##_tramp, sizeof(T)}
    SR_ROW(sr_bn_stats, SrBnStats),
    SR_ROW(sr_bn_forward, SrBnForward),
    SR_ROW(sr_bn_backward_reduce, SrBnBackwardReduce),
    SR_ROW(sr_bn_backward_apply, SrBnBackwardApply),
    SR_ROW(sr_pool_forward, SrPoolForward),
    SR_ROW(sr_pool_backward, SrPoolBackward),
    SR_ROW(sr_gap_forward, SrGapForward),
    SR_ROW(sr_gap_backward, SrGapBackward),
    SR_ROW(sr_add_relu_forward, SrAddRelu),
    SR_ROW(sr_add_relu_backward, SrAddReluBackward),
    SR_ROW(sr_count_nonfinite, SrCountNonfinite),
};

enum { RUNNABLE, AT_BARRIER, DONE };
#define STACK_BYTES (64 * 1024)
#define MAX_THREADS 1024

static ucontext_t sched_ctx;
static ucontext_t fib_ctx[MAX_THREADS];
static int state[MAX_THREADS];
static void *site[MAX_THREADS]; /* the __syncthreads call a waiting thread is at */
static char *stacks;
static int current;
static sr_tramp cur_fn;
static const void *cur_params;
static char err_msg[512];
static unsigned long long switches;

const char *sr_emu_error(void) { return err_msg; }
unsigned long long sr_emu_switches(void) { return switches; }

static void fiber_main(void) {
    cur_fn(cur_params);
    state[current] = DONE; /* then back to sched_ctx through uc_link */
}

void sr_emu_syncthreads(void) {
    state[current] = AT_BARRIER;
    site[current] = __builtin_return_address(0);
    swapcontext(&fib_ctx[current], &sched_ctx);
}

static int run_block(unsigned nthreads, int reverse, const char *name) {
    unsigned t, k, done, waiting;
    for (t = 0; t < nthreads; t++) {
        getcontext(&fib_ctx[t]);
        fib_ctx[t].uc_stack.ss_sp = stacks + (size_t)t * STACK_BYTES;
        fib_ctx[t].uc_stack.ss_size = STACK_BYTES;
        fib_ctx[t].uc_link = &sched_ctx;
        makecontext(&fib_ctx[t], fiber_main, 0);
        state[t] = RUNNABLE;
    }
    for (;;) {
        for (k = 0; k < nthreads; k++) {
            t = reverse ? nthreads - 1 - k : k;
            if (state[t] != RUNNABLE) {
                continue;
            }
            current = (int)t;
            sr_emu_thread_idx.x = t % sr_emu_block_dim.x;
            sr_emu_thread_idx.y = (t / sr_emu_block_dim.x) % sr_emu_block_dim.y;
            sr_emu_thread_idx.z = t / (sr_emu_block_dim.x * sr_emu_block_dim.y);
            switches++;
            swapcontext(&sched_ctx, &fib_ctx[t]);
        }
        done = waiting = 0;
        for (t = 0; t < nthreads; t++) {
            done += state[t] == DONE;
            waiting += state[t] == AT_BARRIER;
        }
        if (done == nthreads) {
            return 0;
        }
        if (done > 0) {
            snprintf(err_msg, sizeof err_msg,
                     "%s: block (%u,%u,%u): %u threads returned while %u wait at __syncthreads", name,
                     sr_emu_block_idx.x, sr_emu_block_idx.y, sr_emu_block_idx.z, done, waiting);
            return -1;
        }
        for (t = 1; t < nthreads; t++) {
            if (site[t] != site[0]) {
                snprintf(err_msg, sizeof err_msg,
                         "%s: block (%u,%u,%u): threads 0 and %u wait at different __syncthreads",
                         name, sr_emu_block_idx.x, sr_emu_block_idx.y, sr_emu_block_idx.z, t);
                return -1;
            }
        }
        for (t = 0; t < nthreads; t++) {
            state[t] = RUNNABLE;
        }
    }
}

int sr_emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                  unsigned bz, const void *params, size_t size, int reverse) {
    size_t i, n = sizeof KERNELS / sizeof KERNELS[0];
    unsigned long long b, blocks;
    unsigned nthreads = bx * by * bz;
    err_msg[0] = 0;
    for (i = 0; i < n && strcmp(KERNELS[i].name, name) != 0; i++) {
    }
    if (i == n) {
        snprintf(err_msg, sizeof err_msg, "no kernel named %s", name);
        return -1;
    }
    if (KERNELS[i].size != size) {
        snprintf(err_msg, sizeof err_msg, "%s: parameter struct is %zu bytes in C, %zu from Rust",
                 name, KERNELS[i].size, size);
        return -1;
    }
    if (nthreads == 0 || nthreads > MAX_THREADS || gx == 0 || gy == 0 || gz == 0 || gy > 65535 ||
        gz > 65535) {
        snprintf(err_msg, sizeof err_msg, "%s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)",
                 name, gx, gy, gz, bx, by, bz);
        return -1;
    }
    if (!stacks) {
        stacks = malloc((size_t)MAX_THREADS * STACK_BYTES);
        if (!stacks) {
            snprintf(err_msg, sizeof err_msg, "out of memory for fiber stacks");
            return -1;
        }
    }
    cur_fn = KERNELS[i].fn;
    cur_params = params;
    sr_emu_grid_dim.x = gx;
    sr_emu_grid_dim.y = gy;
    sr_emu_grid_dim.z = gz;
    sr_emu_block_dim.x = bx;
    sr_emu_block_dim.y = by;
    sr_emu_block_dim.z = bz;
    blocks = (unsigned long long)gx * gy * gz;
    for (b = 0; b < blocks; b++) {
        unsigned long long id = reverse ? blocks - 1 - b : b;
        sr_emu_block_idx.x = (unsigned)(id % gx);
        sr_emu_block_idx.y = (unsigned)((id / gx) % gy);
        sr_emu_block_idx.z = (unsigned)(id / ((unsigned long long)gx * gy));
        if (run_block(nthreads, reverse, name) != 0) {
            return -1;
        }
    }
    return 0;
}

/* A buffer of `bytes` ending at a PROT_NONE page; the bytes start as 0xff. */
void *sr_emu_alloc(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (bytes + page - 1) / page * page;
    char *base = mmap(NULL, data + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (base == MAP_FAILED) {
        return NULL;
    }
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + data, page, PROT_NONE);
    memset(base + page, 0xff, data);
    return base + page + data - bytes;
}

void sr_emu_free(void *p, size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (bytes + page - 1) / page * page;
    char *end = (char *)p + bytes;
    munmap(end - data - page, data + 2 * page);
}

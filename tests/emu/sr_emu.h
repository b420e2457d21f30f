/*
 * Just enough of CUDA C for src/ops/kernels.cu to compile as C and run on the CPU
 * (tests/cuda_kernels_emu.rs builds it with tests/emu/sr_emu.c into a shared library).
 *
 * Each block's threads run as cooperative fibers (ucontext): a thread runs until it reaches
 * __syncthreads() or returns, then the next one runs. Blocks run one after another, so
 * `__shared__` arrays can be function-level `static`s. Nothing in the kernels may rely on warps
 * (no shuffles, no implicit warp synchrony): only __syncthreads orders threads here.
 */
#ifndef SR_EMU_H
#define SR_EMU_H

#include <math.h>

typedef struct {
    unsigned x, y, z;
} sr_emu_dim3;

extern sr_emu_dim3 sr_emu_thread_idx, sr_emu_block_idx, sr_emu_block_dim, sr_emu_grid_dim;

#define threadIdx sr_emu_thread_idx
#define blockIdx sr_emu_block_idx
#define blockDim sr_emu_block_dim
#define gridDim sr_emu_grid_dim

#define SR_KERNEL
#define SR_DEVICE static inline
#define SR_SHARED static

void sr_emu_syncthreads(void);
#define __syncthreads() sr_emu_syncthreads()

/* Fibers are never pre-empted, so a plain read-modify-write is atomic. */
static inline unsigned atomicAdd(unsigned *p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}

#endif

/*
 * Fused kernels of the CUDA path (src/ops/cuda/): batch-norm (training and eval, ReLU fused),
 * residual add + ReLU, 2x2 average/max pooling, global average pooling, and the non-finite count
 * of the optimiser's gradient check. The convolutions are cuDNN's (src/ops/cuda/conv.rs).
 *
 * build.rs compiles this file to PTX with the toolchain's nvcc (feature `cuda`); the device loads
 * it once with cuModuleLoadData. The same file also compiles as C with a host C compiler and
 * tests/emu/sr_emu.h, which runs each block's threads as cooperative fibers on the CPU
 * (tests/cuda_kernels_emu.rs): so the kernels are written in the subset both accept (no
 * templates, no references, no warp intrinsics; shared memory and __syncthreads only).
 *
 * Conventions, for every kernel:
 * - one parameter, a struct passed by value, mirrored field by field (#[repr(C)]) in
 *   src/ops/kernels.rs; pointers are device pointers (u64 on the Rust side);
 * - blockDim = (SR_THREADS, 1, 1) unless stated; gridDim as documented per kernel;
 * - activations are contiguous NCHW float32; element (n, c, i) of a (N, C, HW) tensor is at
 *   (n * C + c) * HW + i;
 * - every output element is written by exactly one thread; gradient outputs are accumulated
 *   (+=), as dfdx's gradient buffers expect; no atomics except the integer counts.
 * - "per channel" kernels run on a grid (S, C): block (s, c) owns slice s of channel c, i.e. the
 *   flattened indices j in [s * L, min((s + 1) * L, N * HW)) with j = n * HW + i (L = slice_len).
 */
#ifdef __CUDACC__
#define SR_KERNEL extern "C" __global__
#define SR_DEVICE static __device__ __forceinline__
#define SR_SHARED __shared__
#else
#include "sr_emu.h"
#endif

#define SR_THREADS 256
#define SR_MAX_TENSORS 32

typedef unsigned long long u64;

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

/* Tree reduction of two double arrays of blockDim.x (a power of two, <= SR_THREADS) entries in
 * shared memory. Every thread of the block must call it; afterwards a[0], b[0] hold the sums and
 * every thread may read them. */
SR_DEVICE void sr_block_sum2(double *a, double *b) {
    unsigned t = threadIdx.x;
    unsigned w;
    __syncthreads();
    for (w = blockDim.x / 2; w > 0; w >>= 1) {
        if (t < w) {
            a[t] += a[t + w];
            b[t] += b[t + w];
        }
        __syncthreads();
    }
}

/* Walks the slice of one channel that block (blockIdx.x, c) owns: the caller keeps j, n, i and
 * calls sr_walk_next after each element. */
typedef struct {
    u64 j, end;     /* flattened index within the channel, one past the slice's end */
    unsigned n, i;  /* image and in-plane index of j */
    unsigned sn, si; /* blockDim.x = sn * hw + si */
} SrWalk;

SR_DEVICE SrWalk sr_walk_start(unsigned n_images, unsigned hw, u64 slice_len) {
    SrWalk w;
    u64 m = (u64)n_images * hw;
    u64 begin = (u64)blockIdx.x * slice_len;
    u64 end = begin + slice_len;
    w.end = end < m ? end : m;
    w.j = begin + threadIdx.x;
    w.n = (unsigned)(w.j / hw);
    w.i = (unsigned)(w.j - (u64)w.n * hw);
    w.sn = blockDim.x / hw;
    w.si = blockDim.x - w.sn * hw;
    return w;
}

SR_DEVICE void sr_walk_next(SrWalk *w, unsigned hw) {
    w->j += blockDim.x;
    w->n += w->sn;
    w->i += w->si;
    if (w->i >= hw) {
        w->i -= hw;
        w->n += 1;
    }
}

SR_DEVICE u64 sr_offset(const SrWalk *w, unsigned c, unsigned channels, unsigned hw) {
    return ((u64)w->n * channels + c) * hw + w->i;
}

/* ---------------------------------------------------------------------------------------------
 * Batch-norm, training mode, pass 1: per-slice sums of x and x^2 (in double).
 * grid (S, C); writes partial[(c * S + s) * 2 + {0, 1}].
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    double *partial;
    unsigned n, c, hw, slices;
    u64 slice_len;
} SrBnStats;

SR_KERNEL void sr_bn_stats(const SrBnStats p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    unsigned c = blockIdx.y;
    double s = 0.0, q = 0.0;
    SrWalk w = sr_walk_start(p.n, p.hw, p.slice_len);
    while (w.j < w.end) {
        double v = (double)p.x[sr_offset(&w, c, p.c, p.hw)];
        s += v;
        q += v * v;
        sr_walk_next(&w, p.hw);
    }
    sa[threadIdx.x] = s;
    sb[threadIdx.x] = q;
    sr_block_sum2(sa, sb);
    if (threadIdx.x == 0) {
        u64 k = ((u64)c * p.slices + blockIdx.x) * 2;
        p.partial[k] = sa[0];
        p.partial[k + 1] = sb[0];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Batch-norm forward, pass 2 (training) or the only pass (eval): y = x * a + b (then ReLU),
 * a = gamma * invstd, b = beta - mean * a.
 * Training: mean and biased variance from the S partials of sr_bn_stats (every block of the
 * channel reduces them in the same order, so all get the same values); block (0, c) writes the
 * running statistics (PyTorch's update, unbiased variance) to run_*_out and the saved
 * statistics. Eval: mean and variance are the running statistics (nothing is updated).
 * saved[0..C) = mean, [C..2C) = invstd, [2C..3C) = a, [3C..4C) = b (for the backward pass).
 * grid (S, C).
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    float *y;
    const float *gamma;
    const float *beta;
    const double *partial;
    const float *run_mean;
    const float *run_var;
    float *run_mean_out;
    float *run_var_out;
    float *saved;
    unsigned n, c, hw, slices;
    u64 slice_len;
    float momentum, eps;
    int train, relu;
} SrBnForward;

SR_KERNEL void sr_bn_forward(const SrBnForward p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    unsigned c = blockIdx.y;
    unsigned t = threadIdx.x;
    float mean, invstd, a, b;
    if (p.train) {
        double s = 0.0, q = 0.0, m, dmean, var;
        unsigned k;
        for (k = t; k < p.slices; k += blockDim.x) {
            s += p.partial[((u64)c * p.slices + k) * 2];
            q += p.partial[((u64)c * p.slices + k) * 2 + 1];
        }
        sa[t] = s;
        sb[t] = q;
        sr_block_sum2(sa, sb);
        m = (double)p.n * (double)p.hw;
        dmean = sa[0] / m;
        var = sb[0] / m - dmean * dmean;
        if (var < 0.0) {
            var = 0.0;
        }
        mean = (float)dmean;
        invstd = (float)(1.0 / sqrt(var + (double)p.eps));
        if (blockIdx.x == 0 && t == 0) {
            double mom = (double)p.momentum;
            p.run_mean_out[c] = (float)((1.0 - mom) * (double)p.run_mean[c] + mom * dmean);
            p.run_var_out[c] =
                (float)((1.0 - mom) * (double)p.run_var[c] + mom * var * m / (m - 1.0));
        }
    } else {
        mean = p.run_mean[c];
        invstd = 1.0f / sqrtf(p.run_var[c] + p.eps);
    }
    a = p.gamma[c] * invstd;
    b = p.beta[c] - mean * a;
    if (blockIdx.x == 0 && t == 0) {
        p.saved[c] = mean;
        p.saved[p.c + c] = invstd;
        p.saved[2 * p.c + c] = a;
        p.saved[3 * p.c + c] = b;
    }
    {
        SrWalk w = sr_walk_start(p.n, p.hw, p.slice_len);
        while (w.j < w.end) {
            u64 o = sr_offset(&w, c, p.c, p.hw);
            float v = p.x[o] * a + b;
            if (p.relu && !(v > 0.0f)) {
                v = 0.0f;
            }
            p.y[o] = v;
            sr_walk_next(&w, p.hw);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Batch-norm backward, pass 1: per-slice sums of dy' and dy' * x, where dy' is dy masked by the
 * fused ReLU (pre-activation x * a + b > 0, recomputed from x with the forward's a and b).
 * grid (S, C); writes partial[(c * S + s) * 2 + {0, 1}].
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    const float *dy;
    const float *saved;
    double *partial;
    unsigned n, c, hw, slices;
    u64 slice_len;
    int relu, pad;
} SrBnBackwardReduce;

SR_KERNEL void sr_bn_backward_reduce(const SrBnBackwardReduce p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    unsigned c = blockIdx.y;
    float a = p.saved[2 * p.c + c];
    float b = p.saved[3 * p.c + c];
    double s1 = 0.0, sx = 0.0;
    SrWalk w = sr_walk_start(p.n, p.hw, p.slice_len);
    while (w.j < w.end) {
        u64 o = sr_offset(&w, c, p.c, p.hw);
        float x = p.x[o];
        float d = p.dy[o];
        if (p.relu && !(x * a + b > 0.0f)) {
            d = 0.0f;
        }
        s1 += (double)d;
        sx += (double)d * (double)x;
        sr_walk_next(&w, p.hw);
    }
    sa[threadIdx.x] = s1;
    sb[threadIdx.x] = sx;
    sr_block_sum2(sa, sb);
    if (threadIdx.x == 0) {
        u64 k = ((u64)c * p.slices + blockIdx.x) * 2;
        p.partial[k] = sa[0];
        p.partial[k + 1] = sb[0];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Batch-norm backward, pass 2: with S1 = sum dy', SX = sum dy' x over the channel,
 *   dgamma += invstd (SX - mean S1)   (= sum dy' xhat),   dbeta += S1   (block (0, c) only),
 *   dx += k dy' + c0 - c1 x,  k = gamma invstd,
 *   training: c0 = k (mean invstd m2 - m1), c1 = k invstd m2, m1 = S1 / M, m2 = sum dy' xhat / M;
 *   eval (running statistics are constants): c0 = c1 = 0.
 * grid (S, C).
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    const float *dy;
    const float *gamma;
    const float *saved;
    const double *partial;
    float *dx;
    float *dgamma;
    float *dbeta;
    unsigned n, c, hw, slices;
    u64 slice_len;
    int train, relu;
} SrBnBackwardApply;

SR_KERNEL void sr_bn_backward_apply(const SrBnBackwardApply p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    unsigned c = blockIdx.y;
    unsigned t = threadIdx.x;
    float mean = p.saved[c];
    float invstd = p.saved[p.c + c];
    float a = p.saved[2 * p.c + c];
    float b = p.saved[3 * p.c + c];
    double s1 = 0.0, sx = 0.0, sxhat, m;
    float k, m1, m2, c0, c1;
    unsigned q;
    for (q = t; q < p.slices; q += blockDim.x) {
        s1 += p.partial[((u64)c * p.slices + q) * 2];
        sx += p.partial[((u64)c * p.slices + q) * 2 + 1];
    }
    sa[t] = s1;
    sb[t] = sx;
    sr_block_sum2(sa, sb);
    s1 = sa[0];
    sx = sb[0];
    sxhat = (double)invstd * (sx - (double)mean * s1);
    if (blockIdx.x == 0 && t == 0) {
        p.dgamma[c] += (float)sxhat;
        p.dbeta[c] += (float)s1;
    }
    m = (double)p.n * (double)p.hw;
    k = p.gamma[c] * invstd;
    if (p.train) {
        m1 = (float)(s1 / m);
        m2 = (float)(sxhat / m);
    } else {
        m1 = 0.0f;
        m2 = 0.0f;
    }
    c0 = k * (mean * invstd * m2 - m1);
    c1 = k * invstd * m2;
    {
        SrWalk w = sr_walk_start(p.n, p.hw, p.slice_len);
        while (w.j < w.end) {
            u64 o = sr_offset(&w, c, p.c, p.hw);
            float x = p.x[o];
            float d = p.dy[o];
            if (p.relu && !(x * a + b > 0.0f)) {
                d = 0.0f;
            }
            p.dx[o] += k * d + c0 - c1 * x;
            sr_walk_next(&w, p.hw);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * 2x2 pooling, stride 2 (odd trailing rows/columns are dropped). One thread per output, grid-
 * stride over the planes * ho * wo outputs; grid (G, 1).
 * Max: the first maximum in row-major window order wins (ties), as on the CPU and in PyTorch.
 * Backward: recomputes the window's argmax from x; windows do not overlap, so each dx element
 * is written by at most one thread.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    float *y;
    u64 outputs;
    unsigned h, w, ho, wo;
    int max, pad;
} SrPoolForward;

/* Offset of the window of output idx (the host guarantees outputs < 2^32, so the index
 * arithmetic runs in 32 bits; offsets are 64-bit). */
SR_DEVICE u64 sr_pool_window(u64 idx, unsigned h, unsigned w, unsigned ho, unsigned wo) {
    unsigned i = (unsigned)idx;
    unsigned plane = i / (ho * wo);
    unsigned r = i - plane * (ho * wo);
    unsigned oy = r / wo;
    unsigned ox = r - oy * wo;
    return (u64)plane * ((u64)h * w) + (u64)(2 * oy) * w + 2 * ox;
}

/* Index 0..3 of the first maximum of the window at i0 (row-major: (0,0), (0,1), (1,0), (1,1)). */
SR_DEVICE unsigned sr_argmax4(const float *x, u64 i0, unsigned w) {
    float c0 = x[i0], c1 = x[i0 + 1], c2 = x[i0 + w], c3 = x[i0 + w + 1];
    unsigned best = 0;
    float bv = c0;
    if (c1 > bv) {
        best = 1;
        bv = c1;
    }
    if (c2 > bv) {
        best = 2;
        bv = c2;
    }
    if (c3 > bv) {
        best = 3;
    }
    return best;
}

SR_KERNEL void sr_pool_forward(const SrPoolForward p) {
    u64 idx;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < p.outputs; idx += stride) {
        u64 i0 = sr_pool_window(idx, p.h, p.w, p.ho, p.wo);
        if (p.max) {
            unsigned k = sr_argmax4(p.x, i0, p.w);
            p.y[idx] = p.x[i0 + (k >> 1) * p.w + (k & 1)];
        } else {
            p.y[idx] = 0.25f * (p.x[i0] + p.x[i0 + 1] + p.x[i0 + p.w] + p.x[i0 + p.w + 1]);
        }
    }
}

typedef struct {
    const float *x;
    const float *dy;
    float *dx;
    u64 outputs;
    unsigned h, w, ho, wo;
    int max, pad;
} SrPoolBackward;

SR_KERNEL void sr_pool_backward(const SrPoolBackward p) {
    u64 idx;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < p.outputs; idx += stride) {
        u64 i0 = sr_pool_window(idx, p.h, p.w, p.ho, p.wo);
        float d = p.dy[idx];
        if (p.max) {
            unsigned k = sr_argmax4(p.x, i0, p.w);
            p.dx[i0 + (k >> 1) * p.w + (k & 1)] += d;
        } else {
            d = 0.25f * d;
            p.dx[i0] += d;
            p.dx[i0 + 1] += d;
            p.dx[i0 + p.w] += d;
            p.dx[i0 + p.w + 1] += d;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Global average pooling: y[plane] = mean of the plane's hw values (summed in double).
 * One block per plane, grid-stride over the planes; blockDim a power of two, 32..SR_THREADS.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *x;
    float *y;
    u64 planes;
    unsigned hw, pad;
} SrGapForward;

SR_KERNEL void sr_gap_forward(const SrGapForward p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    u64 plane;
    for (plane = blockIdx.x; plane < p.planes; plane += gridDim.x) {
        const float *xp = p.x + plane * p.hw;
        double s = 0.0;
        unsigned i;
        for (i = threadIdx.x; i < p.hw; i += blockDim.x) {
            s += (double)xp[i];
        }
        sa[threadIdx.x] = s;
        sb[threadIdx.x] = 0.0;
        sr_block_sum2(sa, sb);
        if (threadIdx.x == 0) {
            p.y[plane] = (float)(sa[0] / (double)p.hw);
        }
        /* sa[0] is read above before any thread of the next plane overwrites sa */
        __syncthreads();
    }
}

/* dx[e] += dy[e / hw] * (1 / hw); grid-stride over the planes * hw elements (< 2^32, checked
 * by the host, so the division runs in 32 bits). */
typedef struct {
    const float *dy;
    float *dx;
    u64 elements;
    unsigned hw;
    float inv_hw;
} SrGapBackward;

SR_KERNEL void sr_gap_backward(const SrGapBackward p) {
    u64 e;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < p.elements; e += stride) {
        p.dx[e] += p.dy[(unsigned)e / p.hw] * p.inv_hw;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Residual join: y = max(a + b, 0); backward da += dy [y > 0], db += dy [y > 0] (da and db may
 * be the same buffer: each thread adds both terms to it in turn). Grid-stride, grid (G, 1).
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *a;
    const float *b;
    float *y;
    u64 elements;
} SrAddRelu;

SR_KERNEL void sr_add_relu_forward(const SrAddRelu p) {
    u64 e;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < p.elements; e += stride) {
        float v = p.a[e] + p.b[e];
        p.y[e] = v > 0.0f ? v : 0.0f;
    }
}

typedef struct {
    const float *y;
    const float *dy;
    float *da;
    float *db;
    u64 elements;
} SrAddReluBackward;

SR_KERNEL void sr_add_relu_backward(const SrAddReluBackward p) {
    u64 e;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < p.elements; e += stride) {
        float d = p.y[e] > 0.0f ? p.dy[e] : 0.0f;
        p.da[e] += d;
        p.db[e] += d;
    }
}

/* ---------------------------------------------------------------------------------------------
 * The optimiser's gradient check: counts[first + k] += number of non-finite values of tensor k
 * (k < count <= SR_MAX_TENSORS). grid (G, count): blocks (., k) grid-stride over tensor k.
 * A value is finite iff |v| <= FLT_MAX (NaN compares false).
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    const float *ptr[SR_MAX_TENSORS];
    u64 len[SR_MAX_TENSORS];
    unsigned *counts;
    unsigned first, count;
} SrCountNonfinite;

SR_KERNEL void sr_count_nonfinite(const SrCountNonfinite p) {
    SR_SHARED double sa[SR_THREADS];
    SR_SHARED double sb[SR_THREADS];
    unsigned k = blockIdx.y;
    const float *g = p.ptr[k];
    u64 n = p.len[k];
    u64 e;
    unsigned bad = 0;
    for (e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (u64)gridDim.x * blockDim.x) {
        float v = g[e];
        if (!(fabsf(v) <= 3.402823466e+38f)) {
            bad += 1;
        }
    }
    sa[threadIdx.x] = (double)bad;
    sb[threadIdx.x] = 0.0;
    sr_block_sum2(sa, sb);
    if (threadIdx.x == 0 && sa[0] > 0.0) {
        atomicAdd(&p.counts[p.first + k], (unsigned)sa[0]);
    }
}

/*
 * Compile-time check of src/ops/cuda/cudnn.rs against the cuDNN 9 headers (run by
 * scripts/cuda-build.sh: `gcc -fsyntax-only -I$CUDA_ROOT/include src/ops/cuda/cudnn_abi.c`).
 * Every constant the Rust side hard-codes, the layout of the algorithm-perf struct it mirrors,
 * and the prototype of every function it declares (as the function-pointer types below, which
 * spell out the Rust declarations' parameter types) must agree, or this does not compile.
 */
#include <stddef.h>
#include <cudnn.h>

#define SAME(a, b) _Static_assert((a) == (b), #a " != " #b)

SAME(CUDNN_STATUS_SUCCESS, 0);
SAME(CUDNN_DATA_FLOAT, 0);
SAME(CUDNN_TENSOR_NCHW, 0);
SAME(CUDNN_CROSS_CORRELATION, 1);
SAME(CUDNN_DEFAULT_MATH, 0);
SAME(CUDNN_TENSOR_OP_MATH, 1);
SAME(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, 2);
SAME(CUDNN_FMA_MATH, 3);
SAME(CUDNN_CONVOLUTION_FWD_ALGO_COUNT, 8);
SAME(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, 6);
SAME(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, 7);
/* Status codes by thousands, as cudnn.rs::check maps them. */
SAME(CUDNN_STATUS_NOT_INITIALIZED / 1000, 1);
SAME(CUDNN_STATUS_BAD_PARAM / 1000, 2);
SAME(CUDNN_STATUS_NOT_SUPPORTED / 1000, 3);
SAME(CUDNN_STATUS_INTERNAL_ERROR / 1000, 4);
SAME(CUDNN_STATUS_EXECUTION_FAILED / 1000, 5);
/* The enums are int-sized (Rust passes i32). */
SAME(sizeof(cudnnStatus_t), 4);
SAME(sizeof(cudnnConvolutionFwdAlgo_t), 4);
SAME(sizeof(cudnnMathType_t), 4);

/* AlgoPerf in cudnn.rs: algo, status, time, memory, determinism, math_type, reserved[3]. */
#define PERF(T)                                                                                    \
    SAME(sizeof(T), 48);                                                                           \
    SAME(offsetof(T, algo), 0);                                                                    \
    SAME(offsetof(T, status), 4);                                                                  \
    SAME(offsetof(T, time), 8);                                                                    \
    SAME(offsetof(T, memory), 16);                                                                 \
    SAME(offsetof(T, determinism), 24);                                                            \
    SAME(offsetof(T, mathType), 28);                                                               \
    SAME(offsetof(T, reserved), 32)
PERF(cudnnConvolutionFwdAlgoPerf_t);
PERF(cudnnConvolutionBwdDataAlgoPerf_t);
PERF(cudnnConvolutionBwdFilterAlgoPerf_t);

/* Prototypes: Handle/descriptors are pointers, statuses and enums int, sizes size_t. */
typedef void *P;
static size_t (*const p_version)(void) = cudnnGetVersion;
static const char *(*const p_err)(cudnnStatus_t) = cudnnGetErrorString;
static cudnnStatus_t (*const p_create)(cudnnHandle_t *) = cudnnCreate;
static cudnnStatus_t (*const p_destroy)(cudnnHandle_t) = cudnnDestroy;
static cudnnStatus_t (*const p_stream)(cudnnHandle_t, cudaStream_t) = cudnnSetStream;
static cudnnStatus_t (*const p_ctd)(cudnnTensorDescriptor_t *) = cudnnCreateTensorDescriptor;
static cudnnStatus_t (*const p_std)(cudnnTensorDescriptor_t, cudnnTensorFormat_t, cudnnDataType_t,
                                    int, int, int, int) = cudnnSetTensor4dDescriptor;
static cudnnStatus_t (*const p_dtd)(cudnnTensorDescriptor_t) = cudnnDestroyTensorDescriptor;
static cudnnStatus_t (*const p_cfd)(cudnnFilterDescriptor_t *) = cudnnCreateFilterDescriptor;
static cudnnStatus_t (*const p_sfd)(cudnnFilterDescriptor_t, cudnnDataType_t, cudnnTensorFormat_t,
                                    int, int, int, int) = cudnnSetFilter4dDescriptor;
static cudnnStatus_t (*const p_dfd)(cudnnFilterDescriptor_t) = cudnnDestroyFilterDescriptor;
static cudnnStatus_t (*const p_ccd)(cudnnConvolutionDescriptor_t *) =
    cudnnCreateConvolutionDescriptor;
static cudnnStatus_t (*const p_scd)(cudnnConvolutionDescriptor_t, int, int, int, int, int, int,
                                    cudnnConvolutionMode_t, cudnnDataType_t) =
    cudnnSetConvolution2dDescriptor;
static cudnnStatus_t (*const p_smt)(cudnnConvolutionDescriptor_t, cudnnMathType_t) =
    cudnnSetConvolutionMathType;
static cudnnStatus_t (*const p_dcd)(cudnnConvolutionDescriptor_t) =
    cudnnDestroyConvolutionDescriptor;
static cudnnStatus_t (*const p_ffwd)(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                     const cudnnFilterDescriptor_t,
                                     const cudnnConvolutionDescriptor_t,
                                     const cudnnTensorDescriptor_t, const int, int *,
                                     cudnnConvolutionFwdAlgoPerf_t *) =
    cudnnFindConvolutionForwardAlgorithm;
static cudnnStatus_t (*const p_fbd)(cudnnHandle_t, const cudnnFilterDescriptor_t,
                                    const cudnnTensorDescriptor_t,
                                    const cudnnConvolutionDescriptor_t,
                                    const cudnnTensorDescriptor_t, const int, int *,
                                    cudnnConvolutionBwdDataAlgoPerf_t *) =
    cudnnFindConvolutionBackwardDataAlgorithm;
static cudnnStatus_t (*const p_fbf)(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                    const cudnnTensorDescriptor_t,
                                    const cudnnConvolutionDescriptor_t,
                                    const cudnnFilterDescriptor_t, const int, int *,
                                    cudnnConvolutionBwdFilterAlgoPerf_t *) =
    cudnnFindConvolutionBackwardFilterAlgorithm;
static cudnnStatus_t (*const p_wfwd)(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                     const cudnnFilterDescriptor_t,
                                     const cudnnConvolutionDescriptor_t,
                                     const cudnnTensorDescriptor_t, cudnnConvolutionFwdAlgo_t,
                                     size_t *) = cudnnGetConvolutionForwardWorkspaceSize;
static cudnnStatus_t (*const p_wbd)(cudnnHandle_t, const cudnnFilterDescriptor_t,
                                    const cudnnTensorDescriptor_t,
                                    const cudnnConvolutionDescriptor_t,
                                    const cudnnTensorDescriptor_t, cudnnConvolutionBwdDataAlgo_t,
                                    size_t *) = cudnnGetConvolutionBackwardDataWorkspaceSize;
static cudnnStatus_t (*const p_wbf)(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                    const cudnnTensorDescriptor_t,
                                    const cudnnConvolutionDescriptor_t,
                                    const cudnnFilterDescriptor_t, cudnnConvolutionBwdFilterAlgo_t,
                                    size_t *) = cudnnGetConvolutionBackwardFilterWorkspaceSize;
static cudnnStatus_t (*const p_fwd)(cudnnHandle_t, const void *, const cudnnTensorDescriptor_t,
                                    const void *, const cudnnFilterDescriptor_t, const void *,
                                    const cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgo_t,
                                    void *, size_t, const void *, const cudnnTensorDescriptor_t,
                                    void *) = cudnnConvolutionForward;
static cudnnStatus_t (*const p_bd)(cudnnHandle_t, const void *, const cudnnFilterDescriptor_t,
                                   const void *, const cudnnTensorDescriptor_t, const void *,
                                   const cudnnConvolutionDescriptor_t,
                                   cudnnConvolutionBwdDataAlgo_t, void *, size_t, const void *,
                                   const cudnnTensorDescriptor_t, void *) =
    cudnnConvolutionBackwardData;
static cudnnStatus_t (*const p_bf)(cudnnHandle_t, const void *, const cudnnTensorDescriptor_t,
                                   const void *, const cudnnTensorDescriptor_t, const void *,
                                   const cudnnConvolutionDescriptor_t,
                                   cudnnConvolutionBwdFilterAlgo_t, void *, size_t, const void *,
                                   const cudnnFilterDescriptor_t, void *) =
    cudnnConvolutionBackwardFilter;

/* Keep the compiler from warning about the unused checks. */
const void *const sr_cudnn_abi_checked[] = {
    (const void *)&p_version, (const void *)&p_err,  (const void *)&p_create,
    (const void *)&p_destroy, (const void *)&p_stream, (const void *)&p_ctd,
    (const void *)&p_std,     (const void *)&p_dtd,  (const void *)&p_cfd,
    (const void *)&p_sfd,     (const void *)&p_dfd,  (const void *)&p_ccd,
    (const void *)&p_scd,     (const void *)&p_smt,  (const void *)&p_dcd,
    (const void *)&p_ffwd,    (const void *)&p_fbd,  (const void *)&p_fbf,
    (const void *)&p_wfwd,    (const void *)&p_wbd,  (const void *)&p_wbf,
    (const void *)&p_fwd,     (const void *)&p_bd,   (const void *)&p_bf,
};

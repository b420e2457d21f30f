//! The few cuDNN calls the convolutions make, declared here against cuDNN 9.
//!
//! cudarc 0.9.15's bindings come from cuDNN 8 headers. The legacy convolution API they declare is
//! still in cuDNN 9 with the same signatures, but cuDNN 9 renumbered `cudnnStatus_t` (e.g.
//! `CUDNN_STATUS_BAD_PARAM` is 2000, was 3): a cuDNN 9 error read into cudarc's Rust enum would be
//! an invalid enum value. So the functions are declared here with plain `i32` status and enum
//! arguments and our own `#[repr(C)]` result struct. `src/ops/cuda/cudnn_abi.c` checks every
//! constant, the struct layout and the prototypes below against the cuDNN 9 headers
//! (`scripts/cuda-build.sh` compiles it), and the link stub of `scripts/cuda-toolchain.sh` defines
//! only what the real `libcudnn.so.9` exports. The library is linked by cudarc's build script
//! (`-lcudnn`, feature `cudnn`). cudarc's `version_check` is never called: the symbols it calls
//! are gone from cuDNN 9.

use cudarc::driver::sys::CUstream;
use dfdx::tensor::CudaError;
use std::ffi::{c_char, c_int, c_void, CStr};

pub type Handle = *mut c_void;
pub type TensorDesc = *mut c_void;
pub type FilterDesc = *mut c_void;
pub type ConvDesc = *mut c_void;

pub const STATUS_SUCCESS: i32 = 0;
pub const DATA_FLOAT: i32 = 0;
pub const TENSOR_NCHW: i32 = 0;
pub const CROSS_CORRELATION: i32 = 1;
pub const DEFAULT_MATH: i32 = 0;
pub const TENSOR_OP_MATH: i32 = 1;
pub const TENSOR_OP_MATH_ALLOW_CONVERSION: i32 = 2;
pub const FMA_MATH: i32 = 3;
pub const FWD_ALGO_COUNT: usize = 8;
pub const BWD_DATA_ALGO_COUNT: usize = 6;
pub const BWD_FILTER_ALGO_COUNT: usize = 7;

/// `cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t` (the three have one layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AlgoPerf {
    pub algo: i32,
    pub status: i32,
    pub time: f32,
    pub memory: usize,
    pub determinism: i32,
    pub math_type: i32,
    pub reserved: [i32; 3],
}

extern "C" {
    pub fn cudnnGetVersion() -> usize;
    pub fn cudnnGetErrorString(status: i32) -> *const c_char;
    pub fn cudnnCreate(handle: *mut Handle) -> i32;
    pub fn cudnnDestroy(handle: Handle) -> i32;
    pub fn cudnnSetStream(handle: Handle, stream: CUstream) -> i32;
    pub fn cudnnCreateTensorDescriptor(desc: *mut TensorDesc) -> i32;
    pub fn cudnnSetTensor4dDescriptor(
        desc: TensorDesc,
        format: i32,
        data_type: i32,
        n: c_int,
        c: c_int,
        h: c_int,
        w: c_int,
    ) -> i32;
    pub fn cudnnDestroyTensorDescriptor(desc: TensorDesc) -> i32;
    pub fn cudnnCreateFilterDescriptor(desc: *mut FilterDesc) -> i32;
    pub fn cudnnSetFilter4dDescriptor(
        desc: FilterDesc,
        data_type: i32,
        format: i32,
        k: c_int,
        c: c_int,
        h: c_int,
        w: c_int,
    ) -> i32;
    pub fn cudnnDestroyFilterDescriptor(desc: FilterDesc) -> i32;
    pub fn cudnnCreateConvolutionDescriptor(desc: *mut ConvDesc) -> i32;
    pub fn cudnnSetConvolution2dDescriptor(
        desc: ConvDesc,
        pad_h: c_int,
        pad_w: c_int,
        u: c_int,
        v: c_int,
        dilation_h: c_int,
        dilation_w: c_int,
        mode: i32,
        compute_type: i32,
    ) -> i32;
    pub fn cudnnSetConvolutionMathType(desc: ConvDesc, math_type: i32) -> i32;
    pub fn cudnnDestroyConvolutionDescriptor(desc: ConvDesc) -> i32;
    pub fn cudnnFindConvolutionForwardAlgorithm(
        handle: Handle,
        x: TensorDesc,
        w: FilterDesc,
        conv: ConvDesc,
        y: TensorDesc,
        requested: c_int,
        returned: *mut c_int,
        perf: *mut AlgoPerf,
    ) -> i32;
    pub fn cudnnFindConvolutionBackwardDataAlgorithm(
        handle: Handle,
        w: FilterDesc,
        dy: TensorDesc,
        conv: ConvDesc,
        dx: TensorDesc,
        requested: c_int,
        returned: *mut c_int,
        perf: *mut AlgoPerf,
    ) -> i32;
    pub fn cudnnFindConvolutionBackwardFilterAlgorithm(
        handle: Handle,
        x: TensorDesc,
        dy: TensorDesc,
        conv: ConvDesc,
        dw: FilterDesc,
        requested: c_int,
        returned: *mut c_int,
        perf: *mut AlgoPerf,
    ) -> i32;
    pub fn cudnnGetConvolutionForwardWorkspaceSize(
        handle: Handle,
        x: TensorDesc,
        w: FilterDesc,
        conv: ConvDesc,
        y: TensorDesc,
        algo: i32,
        bytes: *mut usize,
    ) -> i32;
    pub fn cudnnGetConvolutionBackwardDataWorkspaceSize(
        handle: Handle,
        w: FilterDesc,
        dy: TensorDesc,
        conv: ConvDesc,
        dx: TensorDesc,
        algo: i32,
        bytes: *mut usize,
    ) -> i32;
    pub fn cudnnGetConvolutionBackwardFilterWorkspaceSize(
        handle: Handle,
        x: TensorDesc,
        dy: TensorDesc,
        conv: ConvDesc,
        dw: FilterDesc,
        algo: i32,
        bytes: *mut usize,
    ) -> i32;
    pub fn cudnnConvolutionForward(
        handle: Handle,
        alpha: *const c_void,
        x_desc: TensorDesc,
        x: *const c_void,
        w_desc: FilterDesc,
        w: *const c_void,
        conv: ConvDesc,
        algo: i32,
        workspace: *mut c_void,
        workspace_bytes: usize,
        beta: *const c_void,
        y_desc: TensorDesc,
        y: *mut c_void,
    ) -> i32;
    pub fn cudnnConvolutionBackwardData(
        handle: Handle,
        alpha: *const c_void,
        w_desc: FilterDesc,
        w: *const c_void,
        dy_desc: TensorDesc,
        dy: *const c_void,
        conv: ConvDesc,
        algo: i32,
        workspace: *mut c_void,
        workspace_bytes: usize,
        beta: *const c_void,
        dx_desc: TensorDesc,
        dx: *mut c_void,
    ) -> i32;
    pub fn cudnnConvolutionBackwardFilter(
        handle: Handle,
        alpha: *const c_void,
        x_desc: TensorDesc,
        x: *const c_void,
        dy_desc: TensorDesc,
        dy: *const c_void,
        conv: ConvDesc,
        algo: i32,
        workspace: *mut c_void,
        workspace_bytes: usize,
        beta: *const c_void,
        dw_desc: FilterDesc,
        dw: *mut c_void,
    ) -> i32;
}

/// `Ok` for `CUDNN_STATUS_SUCCESS`; otherwise prints the call and cuDNN's message to stderr and
/// returns the nearest cudarc (cuDNN 8) status: cuDNN 9 groups its codes by thousands
/// (1xxx not initialised, 2xxx bad parameter, 3xxx not supported, 4xxx internal, 5xxx execution).
pub fn check(status: i32, what: &str) -> Result<(), CudaError> {
    if status == STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cudnnGetErrorString returns a static NUL-terminated string for any value.
    let msg = unsafe { CStr::from_ptr(cudnnGetErrorString(status)) }.to_string_lossy();
    eprintln!("spatial-reasoning: cuDNN error {status} ({msg}) in {what}");
    use cudarc::cudnn::sys::cudnnStatus_t as S;
    let nearest = match status / 1000 {
        1 => S::CUDNN_STATUS_NOT_INITIALIZED,
        2 => S::CUDNN_STATUS_BAD_PARAM,
        3 => S::CUDNN_STATUS_NOT_SUPPORTED,
        5 => S::CUDNN_STATUS_EXECUTION_FAILED,
        _ => S::CUDNN_STATUS_INTERNAL_ERROR,
    };
    Err(CudaError::Cudnn(cudarc::cudnn::result::CudnnError(nearest)))
}

/// A cuDNN handle on a stream; destroyed on drop.
#[derive(Debug)]
pub struct Cudnn(pub Handle);

impl Cudnn {
    /// A handle whose work runs on `dev`'s stream.
    pub fn new(dev: &cudarc::driver::CudaDevice) -> Result<Self, CudaError> {
        dev.bind_to_thread()?;
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(unsafe { cudnnCreate(&mut h) }, "cudnnCreate")?;
        let handle = Cudnn(h);
        // SAFETY: a live handle and the device's own stream.
        check(
            unsafe { cudnnSetStream(h, *dev.cu_stream()) },
            "cudnnSetStream",
        )?;
        Ok(handle)
    }
}

impl Drop for Cudnn {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate, destroyed once.
        unsafe { cudnnDestroy(self.0) };
    }
}

/// An NCHW float tensor descriptor.
#[derive(Debug)]
pub struct Tensor4d(pub TensorDesc);

impl Tensor4d {
    pub fn new([n, c, h, w]: [usize; 4]) -> Result<Self, CudaError> {
        let mut d: TensorDesc = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; then a live descriptor.
        check(
            unsafe { cudnnCreateTensorDescriptor(&mut d) },
            "cudnnCreateTensorDescriptor",
        )?;
        let desc = Tensor4d(d);
        let dims = [n, c, h, w].map(to_int);
        check(
            unsafe {
                cudnnSetTensor4dDescriptor(
                    d,
                    TENSOR_NCHW,
                    DATA_FLOAT,
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                )
            },
            "cudnnSetTensor4dDescriptor",
        )?;
        Ok(desc)
    }
}

impl Drop for Tensor4d {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe { cudnnDestroyTensorDescriptor(self.0) };
    }
}

/// A float filter descriptor `(O, I, K, K)`, NCHW (PyTorch's weight layout).
#[derive(Debug)]
pub struct Filter(pub FilterDesc);

impl Filter {
    pub fn new([o, i, kh, kw]: [usize; 4]) -> Result<Self, CudaError> {
        let mut d: FilterDesc = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; then a live descriptor.
        check(
            unsafe { cudnnCreateFilterDescriptor(&mut d) },
            "cudnnCreateFilterDescriptor",
        )?;
        let desc = Filter(d);
        let dims = [o, i, kh, kw].map(to_int);
        check(
            unsafe {
                cudnnSetFilter4dDescriptor(
                    d,
                    DATA_FLOAT,
                    TENSOR_NCHW,
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                )
            },
            "cudnnSetFilter4dDescriptor",
        )?;
        Ok(desc)
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe { cudnnDestroyFilterDescriptor(self.0) };
    }
}

/// A 2-D cross-correlation (PyTorch's convolution), float compute, given math type.
#[derive(Debug)]
pub struct Conv(pub ConvDesc);

impl Conv {
    pub fn new(pad: usize, stride: usize, math_type: i32) -> Result<Self, CudaError> {
        let mut d: ConvDesc = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; then a live descriptor.
        check(
            unsafe { cudnnCreateConvolutionDescriptor(&mut d) },
            "cudnnCreateConvolutionDescriptor",
        )?;
        let desc = Conv(d);
        let (p, s) = (to_int(pad), to_int(stride));
        check(
            unsafe {
                cudnnSetConvolution2dDescriptor(d, p, p, s, s, 1, 1, CROSS_CORRELATION, DATA_FLOAT)
            },
            "cudnnSetConvolution2dDescriptor",
        )?;
        desc.set_math_type(math_type)?;
        Ok(desc)
    }

    pub fn set_math_type(&self, math_type: i32) -> Result<(), CudaError> {
        // SAFETY: a live descriptor.
        check(
            unsafe { cudnnSetConvolutionMathType(self.0, math_type) },
            "cudnnSetConvolutionMathType",
        )
    }
}

impl Drop for Conv {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe { cudnnDestroyConvolutionDescriptor(self.0) };
    }
}

fn to_int(v: usize) -> c_int {
    c_int::try_from(v).unwrap_or_else(|_| panic!("cuDNN dimension {v} does not fit an int"))
}

/// The cuDNN version of the loaded library (e.g. 92801 for 9.28.1).
pub fn version() -> usize {
    // SAFETY: no arguments, no state.
    unsafe { cudnnGetVersion() }
}

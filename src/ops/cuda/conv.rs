//! cuDNN convolutions on dfdx's tape, planned once per geometry.
//!
//! A [`ConvPlan`] holds, for one geometry (batch, channels, size, kernel, stride, padding, math
//! mode), the tensor/filter descriptors and, per direction (forward, backward-data,
//! backward-filter), a convolution descriptor with the algorithm `cudnnFind…` measured fastest
//! (among those whose workspace fits [`MAX_WORKSPACE`]) and the math type it was measured with.
//! The forward direction is planned on the geometry's first forward call, the two backward ones on
//! its first backward call (evaluation never pays for them). Plans live in the device state for
//! the life of the thread; a new batch size is a new geometry.

use super::cudnn::{self, check, AlgoPerf, Conv, Filter, Tensor4d};
use super::{gptr, profile, ptr, state, take_grad, tensor, tf32, State};
use crate::ops::kernels::Ptr;
use crate::ops::{out_size, Act, ConvWeight};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use dfdx::prelude::*;
use dfdx::tensor::CudaError;
use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

/// The largest workspace an algorithm may ask for (1 GiB).
pub const MAX_WORKSPACE: usize = 1 << 30;

/// One convolution geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvKey {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// TF32 allowed ([`super::set_tf32`]).
    pub tf32: bool,
}

/// The chosen algorithm of one direction.
#[derive(Debug)]
pub struct Direction {
    conv: Conv,
    pub algo: i32,
    pub math_type: i32,
    pub workspace: usize,
    /// What `cudnnFind…` measured for it, milliseconds.
    pub time_ms: f32,
}

/// Descriptors and algorithms of one geometry.
#[derive(Debug)]
pub struct ConvPlan {
    pub key: ConvKey,
    x: Tensor4d,
    w: Filter,
    y: Tensor4d,
    pub fwd: Direction,
    bwd: RefCell<Option<Rc<(Direction, Direction)>>>,
}

/// The math type a convolution descriptor asks for.
fn requested_math(tf32: bool) -> i32 {
    if tf32 {
        cudnn::DEFAULT_MATH
    } else {
        cudnn::FMA_MATH
    }
}

/// The fastest usable result of a `cudnnFind…` call (results come sorted by time): status
/// success, workspace within [`MAX_WORKSPACE`], and without TF32 the FMA-only math type (what
/// cuDNN reports for every result of a descriptor asking for FMA math; PyTorch asserts the same).
/// Should none be FMA-only, the fastest successful one is taken with a warning on stderr rather
/// than failing the run (the correctness checks would then show the precision it has).
fn pick(
    results: &[AlgoPerf],
    tf32: bool,
    what: &str,
    key: &ConvKey,
) -> Result<AlgoPerf, CudaError> {
    let ok = |p: &&AlgoPerf| p.status == cudnn::STATUS_SUCCESS && p.memory <= MAX_WORKSPACE;
    if let Some(p) = results
        .iter()
        .filter(ok)
        .find(|p| tf32 || p.math_type == cudnn::FMA_MATH)
    {
        return Ok(*p);
    }
    if let Some(p) = results.iter().find(ok) {
        eprintln!(
            "spatial-reasoning: cuDNN found no FMA-only {what} algorithm for {key:?}; using \
             algorithm {} with math type {}",
            p.algo, p.math_type
        );
        return Ok(*p);
    }
    eprintln!("spatial-reasoning: cuDNN found no usable {what} algorithm for {key:?}: {results:?}");
    check(3000, what).map(|_| AlgoPerf::default())
}

impl State {
    /// The plan for `key`, made (forward direction measured) on first use.
    pub fn conv_plan(&self, key: ConvKey) -> Result<Rc<ConvPlan>, CudaError> {
        if let Some(p) = self.plans.borrow().get(&key) {
            return Ok(p.clone());
        }
        let (ho, wo) = (
            out_size(key.h, key.k, key.stride, key.pad),
            out_size(key.w, key.k, key.stride, key.pad),
        );
        let x = Tensor4d::new([key.n, key.c, key.h, key.w])?;
        let w = Filter::new([key.o, key.c, key.k, key.k])?;
        let y = Tensor4d::new([key.n, key.o, ho, wo])?;
        let conv = Conv::new(key.pad, key.stride, requested_math(key.tf32))?;
        let mut perf = [AlgoPerf::default(); cudnn::FWD_ALGO_COUNT];
        let mut found = 0;
        // SAFETY: live handle and descriptors; `perf` has room for the requested count.
        check(
            unsafe {
                cudnn::cudnnFindConvolutionForwardAlgorithm(
                    self.cudnn.0,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    perf.len() as i32,
                    &mut found,
                    perf.as_mut_ptr(),
                )
            },
            "cudnnFindConvolutionForwardAlgorithm",
        )?;
        let best = pick(&perf[..found.max(0) as usize], key.tf32, "forward", &key)?;
        conv.set_math_type(best.math_type)?;
        let mut ws = 0usize;
        // SAFETY: as above; out-pointer to a local.
        check(
            unsafe {
                cudnn::cudnnGetConvolutionForwardWorkspaceSize(
                    self.cudnn.0,
                    x.0,
                    w.0,
                    conv.0,
                    y.0,
                    best.algo,
                    &mut ws,
                )
            },
            "cudnnGetConvolutionForwardWorkspaceSize",
        )?;
        let plan = Rc::new(ConvPlan {
            key,
            x,
            w,
            y,
            fwd: Direction {
                conv,
                algo: best.algo,
                math_type: best.math_type,
                workspace: ws.max(best.memory),
                time_ms: best.time,
            },
            bwd: RefCell::new(None),
        });
        self.plans.borrow_mut().insert(key, plan.clone());
        Ok(plan)
    }
}

impl ConvPlan {
    /// `y = conv(x, w)`.
    pub fn forward(&self, st: &State, x: Ptr, w: Ptr, y: Ptr) -> Result<(), CudaError> {
        let d = &self.fwd;
        let (ws, _) = st.workspace(d.workspace)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: device buffers of the descriptors' shapes (the caller's tensors, contiguous
        // NCHW f32); the workspace holds at least `d.workspace` bytes.
        check(
            unsafe {
                cudnn::cudnnConvolutionForward(
                    st.cudnn.0,
                    &alpha as *const f32 as *const c_void,
                    self.x.0,
                    x as *const c_void,
                    self.w.0,
                    w as *const c_void,
                    d.conv.0,
                    d.algo,
                    ws as *mut c_void,
                    d.workspace,
                    &beta as *const f32 as *const c_void,
                    self.y.0,
                    y as *mut c_void,
                )
            },
            "cudnnConvolutionForward",
        )
    }

    /// The backward directions (data, filter), measured on first use.
    pub fn backward(&self, st: &State) -> Result<Rc<(Direction, Direction)>, CudaError> {
        if let Some(b) = self.bwd.borrow().as_ref() {
            return Ok(b.clone());
        }
        let key = &self.key;
        let math = requested_math(key.tf32);
        let data = {
            let conv = Conv::new(key.pad, key.stride, math)?;
            let mut perf = [AlgoPerf::default(); cudnn::BWD_DATA_ALGO_COUNT];
            let mut found = 0;
            // SAFETY: live handle and descriptors; room for the requested count.
            check(
                unsafe {
                    cudnn::cudnnFindConvolutionBackwardDataAlgorithm(
                        st.cudnn.0,
                        self.w.0,
                        self.y.0,
                        conv.0,
                        self.x.0,
                        perf.len() as i32,
                        &mut found,
                        perf.as_mut_ptr(),
                    )
                },
                "cudnnFindConvolutionBackwardDataAlgorithm",
            )?;
            let best = pick(
                &perf[..found.max(0) as usize],
                key.tf32,
                "backward-data",
                key,
            )?;
            conv.set_math_type(best.math_type)?;
            let mut ws = 0usize;
            // SAFETY: as above.
            check(
                unsafe {
                    cudnn::cudnnGetConvolutionBackwardDataWorkspaceSize(
                        st.cudnn.0, self.w.0, self.y.0, conv.0, self.x.0, best.algo, &mut ws,
                    )
                },
                "cudnnGetConvolutionBackwardDataWorkspaceSize",
            )?;
            Direction {
                conv,
                algo: best.algo,
                math_type: best.math_type,
                workspace: ws.max(best.memory),
                time_ms: best.time,
            }
        };
        let filter = {
            let conv = Conv::new(key.pad, key.stride, math)?;
            let mut perf = [AlgoPerf::default(); cudnn::BWD_FILTER_ALGO_COUNT];
            let mut found = 0;
            // SAFETY: live handle and descriptors; room for the requested count.
            check(
                unsafe {
                    cudnn::cudnnFindConvolutionBackwardFilterAlgorithm(
                        st.cudnn.0,
                        self.x.0,
                        self.y.0,
                        conv.0,
                        self.w.0,
                        perf.len() as i32,
                        &mut found,
                        perf.as_mut_ptr(),
                    )
                },
                "cudnnFindConvolutionBackwardFilterAlgorithm",
            )?;
            let best = pick(
                &perf[..found.max(0) as usize],
                key.tf32,
                "backward-filter",
                key,
            )?;
            conv.set_math_type(best.math_type)?;
            let mut ws = 0usize;
            // SAFETY: as above.
            check(
                unsafe {
                    cudnn::cudnnGetConvolutionBackwardFilterWorkspaceSize(
                        st.cudnn.0, self.x.0, self.y.0, conv.0, self.w.0, best.algo, &mut ws,
                    )
                },
                "cudnnGetConvolutionBackwardFilterWorkspaceSize",
            )?;
            Direction {
                conv,
                algo: best.algo,
                math_type: best.math_type,
                workspace: ws.max(best.memory),
                time_ms: best.time,
            }
        };
        let b = Rc::new((data, filter));
        *self.bwd.borrow_mut() = Some(b.clone());
        Ok(b)
    }

    /// `dx += conv_backward_data(w, dy)`.
    pub fn backward_data(&self, st: &State, w: Ptr, dy: Ptr, dx: Ptr) -> Result<(), CudaError> {
        let b = self.backward(st)?;
        let d = &b.0;
        let (ws, _) = st.workspace(d.workspace)?;
        let (alpha, beta) = (1.0f32, 1.0f32);
        // SAFETY: device buffers of the descriptors' shapes; workspace large enough.
        check(
            unsafe {
                cudnn::cudnnConvolutionBackwardData(
                    st.cudnn.0,
                    &alpha as *const f32 as *const c_void,
                    self.w.0,
                    w as *const c_void,
                    self.y.0,
                    dy as *const c_void,
                    d.conv.0,
                    d.algo,
                    ws as *mut c_void,
                    d.workspace,
                    &beta as *const f32 as *const c_void,
                    self.x.0,
                    dx as *mut c_void,
                )
            },
            "cudnnConvolutionBackwardData",
        )
    }

    /// `dw += conv_backward_filter(x, dy)`.
    pub fn backward_filter(&self, st: &State, x: Ptr, dy: Ptr, dw: Ptr) -> Result<(), CudaError> {
        let b = self.backward(st)?;
        let d = &b.1;
        let (ws, _) = st.workspace(d.workspace)?;
        let (alpha, beta) = (1.0f32, 1.0f32);
        // SAFETY: device buffers of the descriptors' shapes; workspace large enough.
        check(
            unsafe {
                cudnn::cudnnConvolutionBackwardFilter(
                    st.cudnn.0,
                    &alpha as *const f32 as *const c_void,
                    self.x.0,
                    x as *const c_void,
                    self.y.0,
                    dy as *const c_void,
                    d.conv.0,
                    d.algo,
                    ws as *mut c_void,
                    d.workspace,
                    &beta as *const f32 as *const c_void,
                    self.w.0,
                    dw as *mut c_void,
                )
            },
            "cudnnConvolutionBackwardFilter",
        )
    }
}

/// cuDNN [`crate::ops::OpsDevice::conv2d`] on `Cuda`: forward now, backward-data and
/// backward-filter (accumulating, `beta = 1`) on the tape.
///
/// # Shapes
/// `x: (B, I, H, W)`, `w: (O, I, K, K)` → `(B, O, (H + 2p − K)/s + 1, (W + 2p − K)/s + 1)`
pub fn conv2d<const I: usize, const O: usize, const K: usize, T: Tape<f32, Cuda>>(
    x: Act<I, Cuda, T>,
    w: &ConvWeight<O, I, K, Cuda>,
    stride: usize,
    padding: usize,
) -> Result<Act<O, Cuda, T>, CudaError> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, wd) = *x.shape();
    let (ho, wo) = (
        out_size(h, K, stride, padding),
        out_size(wd, K, stride, padding),
    );
    let dev = x.device().clone();
    let st = state(&dev)?;
    let plan = st.conv_plan(ConvKey {
        n: b,
        c: I,
        h,
        w: wd,
        o: O,
        k: K,
        stride,
        pad: padding,
        tf32: tf32(),
    })?;
    let mut ybuf = st.alloc::<f32>(b * O * ho * wo)?;
    {
        let _p = profile::scope(&st, "conv.fwd");
        plan.forward(&st, ptr(&x), ptr(w), *ybuf.device_ptr_mut())?;
    }
    let y = tensor(&dev, (b, Const::<O>, ho, wo), ybuf);
    if <T as Tape<f32, Cuda>>::OWNS_TAPE {
        let (xg, wg, yg) = (x.ghost(), w.ghost(), y.ghost());
        let w = w.clone();
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, dev, &yg);
            let dy = *gy.device_ptr();
            {
                let _p = profile::scope(&st, "conv.bwd_data");
                let dx = gptr(grads.get_or_alloc_mut(&xg)?);
                plan.backward_data(&st, ptr(&w), dy, dx)?;
            }
            {
                let _p = profile::scope(&st, "conv.bwd_filter");
                let dw = gptr(grads.get_or_alloc_mut(&wg)?);
                plan.backward_filter(&st, ptr(&x), dy, dw)?;
            }
            drop(gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

//! Batch-norm (+ReLU), residual add + ReLU and the poolings on `Cuda`: the fused kernels of
//! `src/ops/kernels.cu` through the launch sequences of [`crate::ops::kernels`], on dfdx's tape.

use super::{gptr, profile, ptr, state, take_grad, tensor};
use crate::ops::kernels::{self as k, BnBackwardBufs, BnForwardBufs, BnPlan, PoolGeo};
use crate::ops::{Act, BnMode, BnParams, Pooled, BN_EPS, BN_MOMENTUM};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use dfdx::prelude::*;
use dfdx::tensor::CudaError;

/// Fused [`crate::ops::OpsDevice::batch_norm2d`] on `Cuda`: training two launches forward (batch
/// statistics, then normalise + running statistics + ReLU), two backward; eval one and two.
/// The running statistics are written to new buffers that replace the tensors in `bn`.
///
/// # Shapes
/// `x: (B, C, H, W)` → `(B, C, H, W)`
pub fn batch_norm2d<const C: usize, T: Tape<f32, Cuda>>(
    x: Act<C, Cuda, T>,
    bn: BnParams<'_, C, Cuda>,
    mode: BnMode,
    relu: bool,
) -> Result<Act<C, Cuda, T>, CudaError> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let train = mode == BnMode::Train;
    let plan = BnPlan::new(b, C, h * w);
    let dev = x.device().clone();
    let st = state(&dev)?;
    let mut y = st.alloc::<f32>(b * C * h * w)?;
    let mut saved = st.alloc::<f32>(4 * C)?;
    let mut new_stats = if train {
        Some((st.alloc::<f32>(C)?, st.alloc::<f32>(C)?))
    } else {
        None
    };
    let (rm, rv) = (ptr(bn.running_mean), ptr(bn.running_var));
    let (rm_out, rv_out) = match new_stats.as_mut() {
        Some((m, v)) => (*m.device_ptr_mut(), *v.device_ptr_mut()),
        None => (rm, rv),
    };
    {
        let _p = profile::scope(&st, "bn.fwd");
        let bufs = BnForwardBufs {
            x: ptr(&x),
            y: *y.device_ptr_mut(),
            gamma: ptr(bn.weight),
            beta: ptr(bn.bias),
            run_mean: rm,
            run_var: rv,
            run_mean_out: rm_out,
            run_var_out: rv_out,
            saved: *saved.device_ptr_mut(),
            partial: if train {
                st.partial(plan.partial_len())?
            } else {
                0
            },
        };
        k::bn_forward(&*st, &plan, &bufs, train, relu, BN_MOMENTUM, BN_EPS)?;
    }
    if let Some((m, v)) = new_stats {
        *bn.running_mean = tensor(&dev, (Const::<C>,), m);
        *bn.running_var = tensor(&dev, (Const::<C>,), v);
    }
    let y = tensor(&dev, (b, Const::<C>, h, w), y);
    if <T as Tape<f32, Cuda>>::OWNS_TAPE {
        let (xg, wg, bg, yg) = (x.ghost(), bn.weight.ghost(), bn.bias.ghost(), y.ghost());
        let gamma = bn.weight.clone();
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, dev, &yg);
            let _p = profile::scope(&st, "bn.bwd");
            let bufs = BnBackwardBufs {
                x: ptr(&x),
                dy: *gy.device_ptr(),
                gamma: ptr(&gamma),
                saved: *saved.device_ptr(),
                dx: gptr(grads.get_or_alloc_mut(&xg)?),
                dgamma: gptr(grads.get_or_alloc_mut(&wg)?),
                dbeta: gptr(grads.get_or_alloc_mut(&bg)?),
                partial: st.partial(plan.partial_len())?,
            };
            k::bn_backward(&*st, &plan, &bufs, train, relu)?;
            drop((gy, saved));
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

fn pool2x2<const C: usize, T: Tape<f32, Cuda>>(
    x: Act<C, Cuda, T>,
    max: bool,
) -> Result<Act<C, Cuda, T>, CudaError> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let geo = PoolGeo::new(b * C, h, w);
    let dev = x.device().clone();
    let st = state(&dev)?;
    let mut y = st.alloc::<f32>(geo.outputs() as usize)?;
    {
        let _p = profile::scope(&st, "pool.fwd");
        k::pool_forward(&*st, &geo, ptr(&x), *y.device_ptr_mut(), max)?;
    }
    let y = tensor(&dev, (b, Const::<C>, geo.ho, geo.wo), y);
    if <T as Tape<f32, Cuda>>::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, dev, &yg);
            let _p = profile::scope(&st, "pool.bwd");
            let dx = gptr(grads.get_or_alloc_mut(&xg)?);
            k::pool_backward(&*st, &geo, ptr(&x), *gy.device_ptr(), dx, max)?;
            drop(gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Fused [`crate::ops::OpsDevice::avg_pool2x2`] on `Cuda` (one launch each way).
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn avg_pool2x2<const C: usize, T: Tape<f32, Cuda>>(
    x: Act<C, Cuda, T>,
) -> Result<Act<C, Cuda, T>, CudaError> {
    pool2x2(x, false)
}

/// Fused [`crate::ops::OpsDevice::max_pool2x2`] on `Cuda`; ties send the gradient to the first
/// maximum (row-major), as the CPU path and PyTorch do.
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn max_pool2x2<const C: usize, T: Tape<f32, Cuda>>(
    x: Act<C, Cuda, T>,
) -> Result<Act<C, Cuda, T>, CudaError> {
    pool2x2(x, true)
}

/// Fused [`crate::ops::OpsDevice::global_avg_pool`] on `Cuda` (one launch each way).
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C)`
pub fn global_avg_pool<const C: usize, T: Tape<f32, Cuda>>(
    x: Act<C, Cuda, T>,
) -> Result<Pooled<C, Cuda, T>, CudaError> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let (planes, hw) = (b * C, h * w);
    let dev = x.device().clone();
    let st = state(&dev)?;
    let mut y = st.alloc::<f32>(planes)?;
    {
        let _p = profile::scope(&st, "gap.fwd");
        k::gap_forward(&*st, planes, hw, ptr(&x), *y.device_ptr_mut())?;
    }
    let y = tensor(&dev, (b, Const::<C>), y);
    if <T as Tape<f32, Cuda>>::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        // The backward needs only the input's shape, not its values.
        drop(x);
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, dev, &yg);
            let _p = profile::scope(&st, "gap.bwd");
            let dx = gptr(grads.get_or_alloc_mut(&xg)?);
            k::gap_backward(&*st, planes, hw, *gy.device_ptr(), dx)?;
            drop(gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Fused [`crate::ops::OpsDevice::add_relu`] on `Cuda`: one launch each way; the backward reads
/// the output (kept alive anyway as the next layer's input) for the ReLU mask.
///
/// # Shapes
/// `a, b: (B, C, H, W)` → `(B, C, H, W)`
pub fn add_relu<const C: usize, T: Tape<f32, Cuda>>(
    a: Act<C, Cuda, T>,
    b: Act<C, Cuda, T>,
) -> Result<Act<C, Cuda, T>, CudaError> {
    assert_eq!(a.shape(), b.shape(), "add_relu: shapes differ");
    let (a, ta) = a.try_contiguous()?.split_tape();
    let (b, tb) = b.try_contiguous()?.split_tape();
    let mut tape = ta.merge(tb);
    let shape = *a.shape();
    let n = shape.num_elements();
    let dev = a.device().clone();
    let st = state(&dev)?;
    let mut y = st.alloc::<f32>(n)?;
    {
        let _p = profile::scope(&st, "add_relu.fwd");
        k::add_relu_forward(&*st, n, ptr(&a), ptr(&b), *y.device_ptr_mut())?;
    }
    let y = tensor(&dev, shape, y);
    if <T as Tape<f32, Cuda>>::OWNS_TAPE {
        let (ag, bg, yg) = (a.ghost(), b.ghost(), y.ghost());
        let out = y.clone();
        drop((a, b));
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, dev, &yg);
            let _p = profile::scope(&st, "add_relu.bwd");
            let da = gptr(grads.get_or_alloc_mut(&ag)?);
            let db = gptr(grads.get_or_alloc_mut(&bg)?);
            k::add_relu_backward(&*st, n, ptr(&out), *gy.device_ptr(), da, db)?;
            drop(gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

//! Device-generic path: the ops composed of dfdx's own tensor ops, so gradients come from dfdx's
//! kernels and the code runs on any device (CUDA included). Slower than [`super::cpu`] on the CPU;
//! the tests check the two against each other.
//!
//! - conv2d: zero-pad by appending one zero to each flattened image, gather the im2col matrix with
//!   a host-built per-image index broadcast over the batch, one matmul with the reshaped weight,
//!   permute back to NCHW.
//! - batch-norm: reductions and broadcasts (the same formulation as dfdx's `BatchNorm2D`, with
//!   PyTorch's running-statistics convention), then ReLU.
//! - pooling: gather the window elements, reduce over the window.

use super::{out_size, Act, BnMode, BnParams, ConvWeight, Pooled, BN_EPS, BN_MOMENTUM};
use dfdx::prelude::*;

/// A 2-D tensor with run-time dims.
type Matrix<D, T> = Tensor<(usize, usize), f32, D, T>;

/// `x` as `(B, C·H·W + 1)`: each image flattened, with one extra zero at index `C·H·W` (the
/// padding target of the gather index).
fn rows_with_zero<const C: usize, D: Device<f32>, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Matrix<D, T>, D::Err> {
    let (b, _, h, w) = *x.shape();
    let dev = x.device().clone();
    let rows = x.try_reshape_like(&(b, C * h * w))?;
    let zero: Tensor<(usize, usize), f32, D> = dev.try_zeros_like(&(b, 1))?;
    (rows, zero).try_concat_along(Axis::<1>)
}

/// Generic [`super::OpsDevice::conv2d`].
///
/// The im2col index is built for one image (`Ho·Wo·I·K·K` entries) and broadcast over the batch
/// (stride 0), so its host-side cost and upload do not grow with the batch. (A whole-batch index
/// was `B·Ho·Wo·I·K·K` entries built on the host and copied to the device for every call: 150 MB
/// per convolution at batch 128, which held ResNet-32 on an H200 to about 60 images/s.)
///
/// # Shapes
/// `x: (B, I, H, W)`, `w: (O, I, K, K)` → `(B, O, Ho, Wo)`
pub fn conv2d<D: Device<f32>, const I: usize, const O: usize, const K: usize, T: Tape<f32, D>>(
    x: Act<I, D, T>,
    w: &ConvWeight<O, I, K, D>,
    stride: usize,
    padding: usize,
) -> Result<Act<O, D, T>, D::Err> {
    let (b, _, h, wd) = *x.shape();
    let (ho, wo) = (
        out_size(h, K, stride, padding),
        out_size(wd, K, stride, padding),
    );
    let plane = I * h * wd;
    let ckk = I * K * K;
    let per_image = ho * wo * ckk;
    let mut idx = Vec::with_capacity(per_image);
    for oy in 0..ho {
        for ox in 0..wo {
            for c in 0..I {
                for ky in 0..K {
                    for kx in 0..K {
                        let iy = (oy * stride + ky) as isize - padding as isize;
                        let ix = (ox * stride + kx) as isize - padding as isize;
                        let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < wd as isize;
                        idx.push(if inside {
                            (c * h + iy as usize) * wd + ix as usize
                        } else {
                            plane
                        });
                    }
                }
            }
        }
    }
    let dev = x.device().clone();
    let idx = dev
        .try_tensor_from_vec(idx, (per_image,))?
        .try_broadcast_like::<_, Axis<0>>(&(b, per_image))?;
    let cols = rows_with_zero(x)?
        .try_gather::<(usize, usize), _>(idx)?
        .try_reshape_like(&(b * ho * wo, ckk))?;
    let wt = w
        .retaped::<T>()
        .try_reshape_like(&(Const::<O>, ckk))?
        .try_permute::<(usize, Const<O>), _>()?;
    let y = cols.try_matmul(wt)?; // (B·Ho·Wo, O)
    let y = y
        .try_reshape_like(&(b, ho * wo, Const::<O>))?
        .try_permute::<(usize, Const<O>, usize), Axes3<0, 2, 1>>()?;
    y.try_reshape_like(&(b, Const::<O>, ho, wo))
}

/// Generic [`super::OpsDevice::batch_norm2d`].
///
/// # Shapes
/// `x: (B, C, H, W)` → `(B, C, H, W)`
pub fn batch_norm2d<D: Device<f32>, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
    bn: BnParams<'_, C, D>,
    mode: BnMode,
    relu: bool,
) -> Result<Act<C, D, T>, D::Err> {
    let shape = *x.shape();
    let y = match mode {
        BnMode::Train => {
            let (b, _, h, w) = shape;
            let m = (b * h * w) as f32;
            assert!(
                m > 1.0,
                "batch-norm in training mode needs more than one value per channel (got {m})"
            );
            let mean = x.retaped::<T>().try_mean::<Rank1<C>, Axes3<0, 2, 3>>()?;
            bn.running_mean
                .try_axpy(1.0 - BN_MOMENTUM, &mean, BN_MOMENTUM)?;
            let centered = x.try_sub(mean.try_broadcast_like(&shape)?)?;
            let var = centered
                .retaped::<T>()
                .try_square()?
                .try_mean::<Rank1<C>, Axes3<0, 2, 3>>()?;
            bn.running_var
                .try_axpy(1.0 - BN_MOMENTUM, &var, BN_MOMENTUM * m / (m - 1.0))?;
            let std = var.try_add(BN_EPS)?.try_sqrt()?;
            let scale = bn
                .weight
                .retaped::<T>()
                .try_div(std)?
                .try_broadcast_like(&shape)?;
            let shift = bn.bias.retaped::<T>().try_broadcast_like(&shape)?;
            centered.try_mul(scale)?.try_add(shift)?
        }
        BnMode::Eval => {
            let std = bn.running_var.clone().try_add(BN_EPS)?.try_sqrt()?;
            let scale = bn
                .weight
                .retaped::<T>()
                .try_div(std)?
                .try_broadcast_like(&shape)?;
            let shift = bn.bias.retaped::<T>().try_broadcast_like(&shape)?;
            let centered = x.try_sub(bn.running_mean.clone().try_broadcast_like(&shape)?)?;
            centered.try_mul(scale)?.try_add(shift)?
        }
    };
    if relu {
        y.try_relu()
    } else {
        Ok(y)
    }
}

/// The four inputs of every 2×2 window, `(B·C·Ho·Wo, 4)`, and the output shape.
type Windows<const C: usize, D, T> = (Pooled<4, D, T>, (usize, Const<C>, usize, usize));

fn windows2x2<const C: usize, D: Device<f32>, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Windows<C, D, T>, D::Err> {
    let (b, _, h, w) = *x.shape();
    let (ho, wo) = (out_size(h, 2, 2, 0), out_size(w, 2, 2, 0));
    // One plane's index, broadcast over the B·C planes.
    let mut idx = Vec::with_capacity(ho * wo * 4);
    for oy in 0..ho {
        for ox in 0..wo {
            let i0 = 2 * oy * w + 2 * ox;
            idx.extend_from_slice(&[i0, i0 + 1, i0 + w, i0 + w + 1]);
        }
    }
    let n = idx.len();
    let planes = b * C;
    let dev = x.device().clone();
    let idx = dev
        .try_tensor_from_vec(idx, (n,))?
        .try_broadcast_like::<_, Axis<0>>(&(planes, n))?;
    let win = x
        .try_reshape_like(&(planes, h * w))?
        .try_gather::<(usize, usize), _>(idx)?
        .try_reshape_like(&(planes * ho * wo, Const::<4>))?;
    Ok((win, (b, Const::<C>, ho, wo)))
}

/// Generic [`super::OpsDevice::avg_pool2x2`].
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn avg_pool2x2<D: Device<f32>, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    let (win, shape) = windows2x2(x)?;
    win.try_mean::<(usize,), Axis<1>>()?
        .try_reshape_like(&shape)
}

/// Generic [`super::OpsDevice::max_pool2x2`] (dfdx's max splits the gradient among tied maxima).
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn max_pool2x2<D: Device<f32>, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    let (win, shape) = windows2x2(x)?;
    win.try_max::<(usize,), Axis<1>>()?.try_reshape_like(&shape)
}

/// Generic [`super::OpsDevice::global_avg_pool`].
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C)`
pub fn global_avg_pool<D: Device<f32>, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Pooled<C, D, T>, D::Err> {
    x.try_mean::<(usize, Const<C>), Axes2<2, 3>>()
}

/// Generic [`super::OpsDevice::add_relu`]: `relu(a + b)`.
///
/// # Shapes
/// `a, b: (B, C, H, W)` → `(B, C, H, W)`
pub fn add_relu<D: Device<f32>, const C: usize, T: Tape<f32, D>>(
    a: Act<C, D, T>,
    b: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    a.try_add(b)?.try_relu()
}

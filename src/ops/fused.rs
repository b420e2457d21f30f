//! Fused convolution + batch-norm ops on the CPU: a ConvBn layer ([`conv_bn`]) and a whole
//! residual block ([`basic_block`], [`down_block`]) as one op each on dfdx's tape, so the
//! memory-bound passes between the convolutions shrink to what the arithmetic needs.
//!
//! What the fusion removes, against the op-by-op path (`conv2d` → `batch_norm2d` → `add_relu`):
//! - batch-norm statistics are taken per output plane right after the convolution wrote it,
//!   while the image is in cache ([`super::cpu::plane_stats`]), not in a pass of their own;
//! - the first batch-norm's ReLU output of a block is never stored: the second convolution
//!   normalises each image into scratch just before it convolves it (forward), and again before
//!   it takes its weight gradient (backward);
//! - batch-norm + residual add + ReLU are one pass (with the ReLU mask as bits), and their
//!   backward is folded into the second convolution's backward, image by image;
//! - the first batch-norm's backward sums are taken from the second convolution's input
//!   gradient while it is in cache, and the input gradients of the intermediate tensors live in
//!   scratch (no zero-filled gradient buffer, no dfdx gradient for them).
//!
//! Per image and chunk of images the arithmetic is the op-by-op path's, operation for
//! operation (the same [`ConvPlan`] calls, batch-norm formulas and summation order);
//! `tests/ops_fused.rs` checks that outputs, gradients and running statistics agree with the
//! op-by-op path to the bit, and `tests/backbone_models.rs` that a training
//! step does not depend on the thread count.
//!
//! Evaluation without a tape ([`BnMode::Eval`], `NoneTape`) runs a block image by image in
//! scratch: the running statistics are known before the convolutions run, so nothing but the
//! block's output is written to memory.

use super::cpu::{
    combine_stats, data, host, plane_stats, release_grad, take_grad, with_scratch, BnAffine,
    BnGrad, ConvPlan, ConvRoute, Err, CHUNK,
};
use super::{Act, BnMode, ConvBnParams};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Scratch slots of the fused ops (the convolutions use 0–3).
const S_D: usize = 4;
const S_G: usize = 5;
const S_Y: usize = 6;
const S_X: usize = 7;

/// `out` (one image, all planes) = the batch-norm input gradient from the output gradient `dy`
/// and the input `x` ([`BnGrad::apply`], written).
fn bn_input_grad(g: &BnGrad, relu: bool, hw: usize, x: &[f32], dy: &[f32], out: &mut [f32]) {
    for (ch, ((o, x), dy)) in out
        .chunks_mut(hw)
        .zip(x.chunks(hw))
        .zip(dy.chunks(hw))
        .enumerate()
    {
        g.apply(ch, relu, x, dy, o, false);
    }
}

/// `y` (one image, all planes) = `x·a + c` (then ReLU) of `bn`.
fn bn_image(bn: &BnAffine, relu: bool, hw: usize, x: &[f32], y: &mut [f32]) {
    for (ch, (y, x)) in y.chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
        bn.apply(ch, relu, x, y);
    }
}

/// The [`plane_stats`] of every plane of one image, into `st` (one per channel).
fn image_stats(hw: usize, x: &[f32], st: &mut [(f64, f64)]) {
    for (s, p) in st.iter_mut().zip(x.chunks(hw)) {
        *s = plane_stats(p);
    }
}

/// The slice of chunk `c` (of [`CHUNK`] images of `len` floats) of `v`.
fn chunk(v: &[f32], len: usize, c: usize) -> &[f32] {
    let lo = c * CHUNK * len;
    &v[lo..(lo + CHUNK * len).min(v.len())]
}

/// Fused [`super::OpsDevice::conv_bn`] on the CPU: the convolution on `route` with its output
/// planes' statistics taken as they are written, then one normalise(-ReLU) pass; the backward
/// runs the batch-norm's input gradient image by image in scratch, straight into the
/// convolution's backward.
///
/// # Shapes
/// `x: (B, I, H, W)` → `(B, O, Ho, Wo)`
pub fn conv_bn<const I: usize, const O: usize, const K: usize, T: Tape<f32, Cpu>>(
    x: Act<I, Cpu, T>,
    layer: ConvBnParams<'_, I, O, K, Cpu>,
    mode: BnMode,
    relu: bool,
    route: ConvRoute,
) -> Result<Act<O, Cpu, T>, Err> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let wv = host(layer.weight);
    let plan = ConvPlan::new((I, h, w), (O, K, layer.stride, K / 2), wv, route);
    let (iml, oml) = (plan.in_image(), plan.out_image());
    let (ho, wo) = plan.out_hw();
    let hw = ho * wo;
    let owns = <T as Tape<f32, Cpu>>::OWNS_TAPE;
    let (wg, gg, bg) = (
        layer.weight.ghost(),
        layer.bn.weight.ghost(),
        layer.bn.bias.ghost(),
    );
    let xv = data(&x);
    let mut yv = vec![0.0f32; b * oml];
    if !owns && mode == BnMode::Eval {
        // Running statistics: convolve and normalise image by image, in scratch.
        let bn = BnAffine::new(layer.bn, mode, Vec::new, b, hw);
        yv.par_chunks_mut(oml)
            .zip(xv.par_chunks(iml))
            .for_each(|(y_n, x_n)| {
                with_scratch(S_X, oml, |x1| {
                    plan.forward_image(x_n, x1);
                    bn_image(&bn, relu, hw, x1, y_n);
                })
            });
        let y = x.device().tensor_from_vec(yv, (b, Const::<O>, ho, wo));
        return Ok(y.put_tape(tape));
    }
    let train = mode == BnMode::Train;
    // The convolution, and each output plane's statistics while its image is in cache.
    let mut x1 = vec![0.0f32; b * oml];
    let mut stats = vec![(0.0, 0.0); b * O];
    x1.par_chunks_mut(oml)
        .zip(xv.par_chunks(iml))
        .zip(stats.par_chunks_mut(O))
        .for_each(|((x1_n, x_n), st)| {
            plan.forward_image(x_n, x1_n);
            if train {
                image_stats(hw, x1_n, st);
            }
        });
    let bn = BnAffine::new(layer.bn, mode, || combine_stats(&stats, O, hw), b, hw);
    yv.par_chunks_mut(oml)
        .zip(x1.par_chunks(oml))
        .for_each(|(y_n, x1_n)| bn_image(&bn, relu, hw, x1_n, y_n));
    let y = x.device().tensor_from_vec(yv, (b, Const::<O>, ho, wo));
    if owns {
        let (xg, yg) = (x.ghost(), y.ghost());
        let xk = x.clone();
        tape.add_backward_op(move |grads| {
            let xv = data(&xk);
            let gy = take_grad!(grads, &yg);
            let planes: Vec<(f64, f64)> = x1
                .par_chunks(hw)
                .zip(gy.par_chunks(hw))
                .enumerate()
                .map(|(i, (x, dy))| bn.plane_sums(i % O, relu, x, dy))
                .collect();
            let g = bn.grad(&planes);
            let gx = grads.get_or_alloc_mut(&xg)?;
            let partials: Vec<Vec<f32>> = gx
                .par_chunks_mut(iml * CHUNK)
                .enumerate()
                .map(|(c, gx_c)| {
                    let mut dwt = plan.new_dwt();
                    let (gy_c, x1_c, x_c) =
                        (chunk(&gy, oml, c), chunk(&x1, oml, c), chunk(xv, iml, c));
                    with_scratch(S_G, oml, |g1| {
                        for (((gx_n, gy_n), x1_n), x_n) in gx_c
                            .chunks_mut(iml)
                            .zip(gy_c.chunks(oml))
                            .zip(x1_c.chunks(oml))
                            .zip(x_c.chunks(iml))
                        {
                            bn_input_grad(&g, relu, hw, x1_n, gy_n, g1);
                            plan.weight_grad_image(x_n, g1, &mut dwt);
                            plan.input_grad_image(g1, gx_n, true);
                        }
                    });
                    dwt
                })
                .collect();
            plan.finish_weight_grad(&partials, grads.get_or_alloc_mut(&wg)?);
            g.add_param_grads(grads, &gg, &bg)?;
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}

/// Fused [`super::OpsDevice::basic_block`] on the CPU (see the module docs).
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H, W)`
pub fn basic_block<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
    conv1: ConvBnParams<'_, C, C, 3, Cpu>,
    conv2: ConvBnParams<'_, C, C, 3, Cpu>,
    mode: BnMode,
    route: ConvRoute,
) -> Result<Act<C, Cpu, T>, Err> {
    assert_eq!(conv1.stride, 1, "basic_block: conv1 has stride 1");
    residual_block(x, conv1, conv2, None, mode, route)
}

/// Fused [`super::OpsDevice::down_block`] on the CPU (see the module docs).
///
/// # Shapes
/// `(B, I, H, W)` → `(B, O, (H − 1)/s + 1, (W − 1)/s + 1)`
pub fn down_block<const I: usize, const O: usize, T: Tape<f32, Cpu>>(
    x: Act<I, Cpu, T>,
    conv1: ConvBnParams<'_, I, O, 3, Cpu>,
    conv2: ConvBnParams<'_, O, O, 3, Cpu>,
    shortcut: ConvBnParams<'_, I, O, 1, Cpu>,
    mode: BnMode,
    route: ConvRoute,
) -> Result<Act<O, Cpu, T>, Err> {
    assert_eq!(
        conv1.stride, shortcut.stride,
        "down_block: the shortcut's stride differs from conv1's"
    );
    residual_block(x, conv1, conv2, Some(shortcut), mode, route)
}

/// One image of a residual block's output: `out = relu(x2·a2 + c2 + r)` with `r` the block's
/// input (`shortcut = None`) or the shortcut's batch-norm of `xs`; and, where `mask` is given,
/// its ReLU mask as bits (`out > 0`).
fn block_out(
    bn2: (&BnAffine, usize),
    shortcut: Option<(&BnAffine, &[f32])>,
    x2: &[f32],
    x: &[f32],
    out: &mut [f32],
    mask: Option<&mut [u64]>,
) {
    super::simd::wide(
        #[inline(always)]
        || block_out_base(bn2, shortcut, x2, x, out, mask),
    )
}

/// [`block_out`] for the target the caller is compiled for.
#[inline(always)]
pub(crate) fn block_out_base(
    (bn2, hw): (&BnAffine, usize),
    shortcut: Option<(&BnAffine, &[f32])>,
    x2: &[f32],
    x: &[f32],
    out: &mut [f32],
    mask: Option<&mut [u64]>,
) {
    for (ch, o) in out.chunks_mut(hw).enumerate() {
        let (a, c) = (bn2.a[ch], bn2.c[ch]);
        let x2p = &x2[ch * hw..][..hw];
        match shortcut {
            None => {
                let r = &x[ch * hw..][..hw];
                o.iter_mut()
                    .zip(x2p.iter().zip(r))
                    .for_each(|(o, (&v, &r))| *o = (v * a + c + r).max(0.0));
            }
            Some((bs, xs)) => {
                let (sa, sc) = (bs.a[ch], bs.c[ch]);
                let s = &xs[ch * hw..][..hw];
                o.iter_mut()
                    .zip(x2p.iter().zip(s))
                    .for_each(|(o, (&v, &s))| *o = ((v * a + c) + (s * sa + sc)).max(0.0));
            }
        }
    }
    if let Some(mask) = mask {
        for (word, o64) in mask.iter_mut().zip(out.chunks(64)) {
            *word = o64
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &v)| w | (u64::from(v > 0.0) << i));
        }
    }
}

/// `d = g` where the mask bit is set, 0 elsewhere (one image).
fn masked(g: &[f32], mask: &[u64], d: &mut [f32]) {
    super::simd::wide(
        #[inline(always)]
        || masked_base(g, mask, d),
    )
}

/// [`masked`] for the target the caller is compiled for.
#[inline(always)]
pub(crate) fn masked_base(g: &[f32], mask: &[u64], d: &mut [f32]) {
    for ((d, g), &word) in d.chunks_mut(64).zip(g.chunks(64)).zip(mask) {
        for (i, (d, &g)) in d.iter_mut().zip(g).enumerate() {
            *d = if (word >> i) & 1 != 0 { g } else { 0.0 };
        }
    }
}

/// The body of [`basic_block`] (`shortcut = None`: identity, `I = O`, stride 1) and
/// [`down_block`].
fn residual_block<const I: usize, const O: usize, T: Tape<f32, Cpu>>(
    x: Act<I, Cpu, T>,
    conv1: ConvBnParams<'_, I, O, 3, Cpu>,
    conv2: ConvBnParams<'_, O, O, 3, Cpu>,
    shortcut: Option<ConvBnParams<'_, I, O, 1, Cpu>>,
    mode: BnMode,
    route: ConvRoute,
) -> Result<Act<O, Cpu, T>, Err> {
    assert_eq!(conv2.stride, 1, "residual block: conv2 has stride 1");
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let s = conv1.stride;
    let p1 = ConvPlan::new((I, h, w), (O, 3, s, 1), host(conv1.weight), route);
    let (ho, wo) = p1.out_hw();
    let hw = ho * wo;
    let p2 = ConvPlan::new((O, ho, wo), (O, 3, 1, 1), host(conv2.weight), route);
    let psc = shortcut
        .as_ref()
        .map(|sc| ConvPlan::new((I, h, w), (O, 1, s, 0), host(sc.weight), route));
    match &psc {
        Some(p) => assert_eq!(p.out_hw(), (ho, wo), "shortcut and conv1 sizes differ"),
        None => assert!(
            I == O && s == 1,
            "an identity shortcut needs I = O, stride 1"
        ),
    }
    let (iml, oml) = (p1.in_image(), p1.out_image());
    let words = oml.div_ceil(64);
    let owns = <T as Tape<f32, Cpu>>::OWNS_TAPE;
    let ghosts1 = (
        conv1.weight.ghost(),
        conv1.bn.weight.ghost(),
        conv1.bn.bias.ghost(),
    );
    let ghosts2 = (
        conv2.weight.ghost(),
        conv2.bn.weight.ghost(),
        conv2.bn.bias.ghost(),
    );
    let ghosts_s = shortcut
        .as_ref()
        .map(|sc| (sc.weight.ghost(), sc.bn.weight.ghost(), sc.bn.bias.ghost()));
    let bn_s = shortcut.map(|sc| sc.bn);
    let xv = data(&x);
    let mut out = vec![0.0f32; b * oml];

    if !owns && mode == BnMode::Eval {
        // Running statistics: the whole block image by image, in scratch.
        let bn1 = BnAffine::new(conv1.bn, mode, Vec::new, b, hw);
        let bn2 = BnAffine::new(conv2.bn, mode, Vec::new, b, hw);
        let bns = bn_s.map(|bn| BnAffine::new(bn, mode, Vec::new, b, hw));
        out.par_chunks_mut(oml)
            .zip(xv.par_chunks(iml))
            .for_each(|(o_n, x_n)| {
                with_scratch(S_X, oml, |t1| {
                    with_scratch(S_Y, oml, |t2| {
                        p1.forward_image(x_n, t1);
                        bn_image(&bn1, true, hw, t1, t2);
                        p2.forward_image(t2, t1);
                        match (&psc, &bns) {
                            (Some(psc), Some(bns)) => {
                                psc.forward_image(x_n, t2);
                                block_out((&bn2, hw), Some((bns, t2)), t1, x_n, o_n, None);
                            }
                            _ => block_out((&bn2, hw), None, t1, x_n, o_n, None),
                        }
                    })
                })
            });
        let y = x.device().tensor_from_vec(out, (b, Const::<O>, ho, wo));
        return Ok(y.put_tape(tape));
    }

    let train = mode == BnMode::Train;
    // conv1 (and the shortcut's conv), statistics per plane as each image is written
    let mut x1 = vec![0.0f32; b * oml];
    let mut xs = vec![0.0f32; if psc.is_some() { b * oml } else { 0 }];
    let mut st1 = vec![(0.0, 0.0); b * O];
    let mut st_s = vec![(0.0, 0.0); b * O];
    x1.par_chunks_mut(oml)
        .zip(xv.par_chunks(iml))
        .zip(st1.par_chunks_mut(O))
        .for_each(|((x1_n, x_n), st)| {
            p1.forward_image(x_n, x1_n);
            if train {
                image_stats(hw, x1_n, st);
            }
        });
    if let Some(psc) = &psc {
        xs.par_chunks_mut(oml)
            .zip(st_s.par_chunks_mut(O))
            .zip(xv.par_chunks(iml))
            .for_each(|((xs_n, st), x_n)| {
                psc.forward_image(x_n, xs_n);
                if train {
                    image_stats(hw, xs_n, st);
                }
            });
    }
    let bn1 = BnAffine::new(conv1.bn, mode, || combine_stats(&st1, O, hw), b, hw);
    // conv2 of bn1's ReLU output, normalised image by image into scratch
    let mut x2 = vec![0.0f32; b * oml];
    let mut st2 = vec![(0.0, 0.0); b * O];
    x2.par_chunks_mut(oml)
        .zip(x1.par_chunks(oml))
        .zip(st2.par_chunks_mut(O))
        .for_each(|((x2_n, x1_n), st)| {
            with_scratch(S_Y, oml, |y1| {
                bn_image(&bn1, true, hw, x1_n, y1);
                p2.forward_image(y1, x2_n);
            });
            if train {
                image_stats(hw, x2_n, st);
            }
        });
    let bn2 = BnAffine::new(conv2.bn, mode, || combine_stats(&st2, O, hw), b, hw);
    let bns = bn_s.map(|bn| BnAffine::new(bn, mode, || combine_stats(&st_s, O, hw), b, hw));
    // bn2 + shortcut + ReLU, and the ReLU mask
    let mut mask = vec![0u64; if owns { b * words } else { 0 }];
    {
        let image_out = |n: usize, o_n: &mut [f32], m: Option<&mut [u64]>| {
            let (x2_n, x_n) = (&x2[n * oml..][..oml], &xv[n * iml..][..iml]);
            let sc = bns.as_ref().map(|bs| (bs, &xs[n * oml..][..oml]));
            block_out((&bn2, hw), sc, x2_n, x_n, o_n, m);
        };
        if owns {
            out.par_chunks_mut(oml)
                .zip(mask.par_chunks_mut(words))
                .enumerate()
                .for_each(|(n, (o_n, m))| image_out(n, o_n, Some(m)));
        } else {
            out.par_chunks_mut(oml)
                .enumerate()
                .for_each(|(n, o_n)| image_out(n, o_n, None));
        }
    }
    let y = x.device().tensor_from_vec(out, (b, Const::<O>, ho, wo));
    if !owns {
        return Ok(y.put_tape(tape));
    }
    let (xg, yg) = (x.ghost(), y.ghost());
    let xk = x.clone();
    tape.add_backward_op(move |grads| {
        let xv = data(&xk);
        let gout = take_grad!(grads, &yg);
        // bn2's (and the shortcut bn's) backward sums, with the output gradient masked by the
        // block's ReLU
        let mut planes2 = vec![(0.0, 0.0); b * O];
        let mut planes_s = vec![(0.0, 0.0); b * O];
        planes2
            .par_chunks_mut(O)
            .zip(planes_s.par_chunks_mut(O))
            .enumerate()
            .for_each(|(n, (p2n, psn))| {
                with_scratch(S_D, oml, |d| {
                    masked(&gout[n * oml..][..oml], &mask[n * words..][..words], d);
                    let x2_n = &x2[n * oml..][..oml];
                    for (ch, (p, dp)) in p2n.iter_mut().zip(d.chunks(hw)).enumerate() {
                        *p = bn2.plane_sums(ch, false, &x2_n[ch * hw..][..hw], dp);
                    }
                    if let Some(bs) = &bns {
                        let xs_n = &xs[n * oml..][..oml];
                        for (ch, (p, dp)) in psn.iter_mut().zip(d.chunks(hw)).enumerate() {
                            *p = bs.plane_sums(ch, false, &xs_n[ch * hw..][..hw], dp);
                        }
                    }
                })
            });
        let g2 = bn2.grad(&planes2);
        let gs = bns.as_ref().map(|bs| bs.grad(&planes_s));
        let gx = grads.get_or_alloc_mut(&xg)?;
        // Per chunk of images: the residual's gradient into gx (identity: the masked output
        // gradient; projection: the shortcut's backward), bn2's input gradient in scratch,
        // conv2's backward (weight gradient on bn1's output recomputed in scratch, input
        // gradient into d1), and bn1's backward sums from d1 while it is in cache.
        let mut d1 = vec![0.0f32; b * oml];
        let mut planes1 = vec![(0.0, 0.0); b * O];
        let partials2: Vec<(Vec<f32>, Vec<f32>)> = gx
            .par_chunks_mut(iml * CHUNK)
            .zip(d1.par_chunks_mut(oml * CHUNK))
            .zip(planes1.par_chunks_mut(O * CHUNK))
            .enumerate()
            .map(|(c, ((gx_c, d1_c), p1_c))| {
                let mut dwt2 = p2.new_dwt();
                let mut dwts = psc.as_ref().map_or_else(Vec::new, |p| p.new_dwt());
                let n0 = c * CHUNK;
                with_scratch(S_D, oml, |d| {
                    with_scratch(S_G, oml, |g| {
                        with_scratch(S_Y, oml, |y1| {
                            for (j, ((gx_n, d1_n), p1_n)) in gx_c
                                .chunks_mut(iml)
                                .zip(d1_c.chunks_mut(oml))
                                .zip(p1_c.chunks_mut(O))
                                .enumerate()
                            {
                                let n = n0 + j;
                                let (gout_n, m_n) =
                                    (&gout[n * oml..][..oml], &mask[n * words..][..words]);
                                let x_n = &xv[n * iml..][..iml];
                                let (x1_n, x2_n) = (&x1[n * oml..][..oml], &x2[n * oml..][..oml]);
                                masked(gout_n, m_n, d);
                                match (&psc, &gs) {
                                    (Some(psc), Some(gs)) => {
                                        let xs_n = &xs[n * oml..][..oml];
                                        bn_input_grad(gs, false, hw, xs_n, d, g);
                                        psc.weight_grad_image(x_n, g, &mut dwts);
                                        psc.input_grad_image(g, gx_n, true);
                                    }
                                    _ => gx_n.iter_mut().zip(d.iter()).for_each(|(g, d)| *g += d),
                                }
                                bn_input_grad(&g2, false, hw, x2_n, d, g);
                                bn_image(&bn1, true, hw, x1_n, y1);
                                p2.weight_grad_image(y1, g, &mut dwt2);
                                p2.input_grad_image(g, d1_n, false);
                                for (ch, p) in p1_n.iter_mut().enumerate() {
                                    let (xp, dp) = (&x1_n[ch * hw..][..hw], &d1_n[ch * hw..][..hw]);
                                    *p = bn1.plane_sums(ch, true, xp, dp);
                                }
                            }
                        })
                    })
                });
                (dwt2, dwts)
            })
            .collect();
        let g1 = bn1.grad(&planes1);
        // bn1's input gradient in scratch, straight into conv1's backward
        let partials1: Vec<Vec<f32>> = gx
            .par_chunks_mut(iml * CHUNK)
            .enumerate()
            .map(|(c, gx_c)| {
                let mut dwt1 = p1.new_dwt();
                let (x_c, x1_c, d1_c) = (chunk(xv, iml, c), chunk(&x1, oml, c), chunk(&d1, oml, c));
                with_scratch(S_G, oml, |g| {
                    for (((gx_n, x_n), x1_n), d1_n) in gx_c
                        .chunks_mut(iml)
                        .zip(x_c.chunks(iml))
                        .zip(x1_c.chunks(oml))
                        .zip(d1_c.chunks(oml))
                    {
                        bn_input_grad(&g1, true, hw, x1_n, d1_n, g);
                        p1.weight_grad_image(x_n, g, &mut dwt1);
                        p1.input_grad_image(g, gx_n, true);
                    }
                });
                dwt1
            })
            .collect();
        let (p2s, pss): (Vec<Vec<f32>>, Vec<Vec<f32>>) = partials2.into_iter().unzip();
        p1.finish_weight_grad(&partials1, grads.get_or_alloc_mut(&ghosts1.0)?);
        g1.add_param_grads(grads, &ghosts1.1, &ghosts1.2)?;
        p2.finish_weight_grad(&p2s, grads.get_or_alloc_mut(&ghosts2.0)?);
        g2.add_param_grads(grads, &ghosts2.1, &ghosts2.2)?;
        if let (Some(psc), Some(gs), Some(gh)) = (&psc, &gs, &ghosts_s) {
            psc.finish_weight_grad(&pss, grads.get_or_alloc_mut(&gh.0)?);
            gs.add_param_grads(grads, &gh.1, &gh.2)?;
        }
        release_grad(gout)
    });
    Ok(y.put_tape(tape))
}

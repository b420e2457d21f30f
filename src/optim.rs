//! Adam and SGD with serialisable state.
//!
//! dfdx keeps its optimisers' moments private, so an interrupted run could not resume exactly. These
//! optimisers keep their state on the host as plain `Vec<f32>` per trainable tensor (in the order
//! dfdx's [`TensorCollection`] visits them), which [`Optimizer::state`] exposes and
//! [`Optimizer::load_state`] restores. The update rule is PyTorch's (`torch.optim.Adam` /
//! `torch.optim.SGD` with dampening 0, L2 weight decay added to the gradient).
//!
//! A step first reads every gradient and checks it is finite; only then are parameters changed, so
//! a non-finite gradient leaves the model and the optimiser state untouched.
//!
//! On `Cuda` ([`OptimDevice`]) the step stays on the device: the check is one kernel over the
//! gradients (a launch per 32 tensors) and one small copy back of the counts, the update dfdx's
//! fused Adam/SGD kernel (one launch per parameter tensor, the same update rule), and the moments
//! live in device memory. [`Optimizer::state`] copies them to the host when asked (checkpoints).

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorViewer, TensorVisitor, ViewTensorMut,
    ViewTensorRef,
};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{OptimConfig, OptimizerKind};

/// Serialisable optimiser state: the step count and one or two moment buffers per parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub step: u64,
    /// Adam: first moments; SGD: momentum buffers.
    pub m: Vec<Vec<f32>>,
    /// Adam: second moments; SGD: empty.
    pub v: Vec<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("non-finite gradient in parameter #{index} ({count} non-finite values); no parameter was changed")]
    NonFiniteGradient { index: usize, count: usize },
    #[error("optimiser state does not fit the model: {0}")]
    StateMismatch(String),
    #[error("device error: {0}")]
    Device(String),
}

/// Adam or SGD over every trainable tensor of a module.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub cfg: OptimConfig,
    /// The step count always; the moments on the host path (on the device path they are in
    /// `device`, and `state.m`/`state.v` are empty or stale until [`Optimizer::state`]).
    state: OptimizerState,
    /// Moments in device memory, once the device path has run.
    #[cfg(feature = "cuda")]
    device: Option<cuda_step::Moments>,
    /// [`Optimizer::state`]'s copy of the device moments, cleared by every step.
    #[cfg(feature = "cuda")]
    snapshot: std::cell::OnceCell<OptimizerState>,
}

/// The devices [`Optimizer::step`] updates on: the host path (`Cpu`, and the default for any
/// device) copies every gradient to the host; `Cuda` runs the check and the update on the device.
pub trait OptimDevice: Device<f32> {
    /// The device path of [`Optimizer::step`], or `None` for the host path.
    #[doc(hidden)]
    fn device_step<M: TensorCollection<f32, Self>>(
        _opt: &mut Optimizer,
        _module: &mut M,
        _grads: &mut Gradients<f32, Self>,
    ) -> Option<Result<(), OptimError>> {
        None
    }
}

impl OptimDevice for Cpu {}

#[cfg(feature = "cuda")]
impl OptimDevice for Cuda {
    fn device_step<M: TensorCollection<f32, Self>>(
        opt: &mut Optimizer,
        module: &mut M,
        grads: &mut Gradients<f32, Self>,
    ) -> Option<Result<(), OptimError>> {
        Some(cuda_step::step(opt, module, grads))
    }
}

impl Optimizer {
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            state: OptimizerState::default(),
            #[cfg(feature = "cuda")]
            device: None,
            #[cfg(feature = "cuda")]
            snapshot: Default::default(),
        }
    }

    /// Number of completed update steps.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// The step count and moments (on the device path copied from the GPU on the first call
    /// after a step).
    pub fn state(&self) -> &OptimizerState {
        #[cfg(feature = "cuda")]
        if let Some(moments) = &self.device {
            return self.snapshot.get_or_init(|| OptimizerState {
                step: self.state.step,
                m: moments.m.iter().map(cuda_step::download).collect(),
                v: moments.v.iter().map(cuda_step::download).collect(),
            });
        }
        &self.state
    }

    /// Restore state saved by [`Optimizer::state`]. Sizes are checked at the next step.
    pub fn load_state(&mut self, state: OptimizerState) {
        self.state = state;
        #[cfg(feature = "cuda")]
        {
            self.device = None;
            self.snapshot = Default::default();
        }
    }

    /// One update of every trainable tensor of `module` from `grads`. A parameter without a
    /// gradient is treated as having a zero gradient.
    pub fn step<M: TensorCollection<f32, D>, D: OptimDevice>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<f32, D>,
    ) -> Result<(), OptimError> {
        if let Some(done) = D::device_step(self, module, grads) {
            return done;
        }
        // Pass 1: collect the gradients on the host and check them.
        let mut collect = Collect {
            grads,
            out: Vec::new(),
            err: None,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: &*module,
            f: &mut collect,
        })
        .map_err(|e| OptimError::Device(format!("{e:?}")))?;
        if let Some(e) = collect.err {
            return Err(OptimError::Device(e));
        }
        let host_grads = collect.out;
        for (index, g) in host_grads.iter().enumerate() {
            let count = g.iter().filter(|x| !x.is_finite()).count();
            if count > 0 {
                return Err(OptimError::NonFiniteGradient { index, count });
            }
        }
        let n_moments = match self.cfg.name {
            OptimizerKind::Adam => 2,
            OptimizerKind::Sgd => 1,
        };
        if self.state.m.is_empty() {
            self.state.m = host_grads.iter().map(|g| vec![0.0; g.len()]).collect();
            if n_moments == 2 {
                self.state.v = host_grads.iter().map(|g| vec![0.0; g.len()]).collect();
            }
        }
        let sizes_ok = self.state.m.len() == host_grads.len()
            && self
                .state
                .m
                .iter()
                .zip(&host_grads)
                .all(|(m, g)| m.len() == g.len())
            && (n_moments == 1
                || (self.state.v.len() == host_grads.len()
                    && self
                        .state
                        .v
                        .iter()
                        .zip(&host_grads)
                        .all(|(v, g)| v.len() == g.len())));
        if !sizes_ok {
            return Err(OptimError::StateMismatch(format!(
                "model has {} trainable tensors, state has {}",
                host_grads.len(),
                self.state.m.len()
            )));
        }
        // Pass 2: apply.
        self.state.step += 1;
        let mut apply = Apply {
            opt: self,
            grads: host_grads,
            index: 0,
            scratch: Vec::new(),
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: module,
            f: &mut apply,
        })
        .map_err(|e| OptimError::Device(format!("{e:?}")))?;
        Ok(())
    }

    fn update_one(&mut self, index: usize, p: &mut [f32], g: &[f32]) {
        let c = &self.cfg;
        let lr = c.lr as f32;
        let wd = c.weight_decay as f32;
        match c.name {
            OptimizerKind::Adam => {
                let h = AdamParams {
                    lr,
                    beta1: c.beta1 as f32,
                    beta2: c.beta2 as f32,
                    eps: c.eps as f32,
                    weight_decay: wd,
                };
                let t = self.state.step as i32;
                let m = &mut self.state.m[index];
                let v = &mut self.state.v[index];
                adam_update(p, g, m, v, &h, t);
            }
            OptimizerKind::Sgd => {
                let mu = c.momentum as f32;
                let first = self.state.step == 1;
                let buf = &mut self.state.m[index];
                for i in 0..p.len() {
                    let gi = g[i] + wd * p[i];
                    buf[i] = if first { gi } else { mu * buf[i] + gi };
                    p[i] -= lr * buf[i];
                }
            }
        }
    }
}

/// Adam's hyper-parameters (PyTorch's names; `weight_decay` is L2, added to the gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// The crate's one Adam update, of the parameters `p` with gradients `g` at step `t` (1-based),
/// moments `m` and `v` (PyTorch's `torch.optim.Adam`, amsgrad off):
/// `g' = g + wd·p; m = β₁m + (1 − β₁)g'; v = β₂v + (1 − β₂)g'²;
/// p −= lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)`. [`Optimizer`]'s host path (pretraining,
/// the supervised arm) and the linear probe call it.
///
/// # Panics
/// If the four slices differ in length.
pub fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamParams, t: i32) {
    assert!(
        g.len() == p.len() && m.len() == p.len() && v.len() == p.len(),
        "adam_update: {} parameters, {} gradients, {}/{} moments",
        p.len(),
        g.len(),
        m.len(),
        v.len()
    );
    let (b1, b2, eps, lr, wd) = (h.beta1, h.beta2, h.eps, h.lr, h.weight_decay);
    let bc1 = 1.0 - b1.powi(t);
    let bc2 = 1.0 - b2.powi(t);
    for i in 0..p.len() {
        let gi = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        let mhat = m[i] / bc1;
        let vhat = v[i] / bc2;
        p[i] -= lr * mhat / (vhat.sqrt() + eps);
    }
}

struct Collect<'a, D: Device<f32>> {
    grads: &'a mut Gradients<f32, D>,
    out: Vec<Vec<f32>>,
    err: Option<String>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Collect<'_, D> {
    type Viewer = ViewTensorRef;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        t: <Self::Viewer as TensorViewer>::View<'_, Tensor<S, f32, D>>,
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        if let Err(e) = self.grads.try_alloc_for(t) {
            self.err = Some(format!("{e:?}"));
            return Ok(None);
        }
        self.out.push(self.grads.get(t).as_vec());
        Ok(None)
    }
}

struct Apply<'a> {
    opt: &'a mut Optimizer,
    grads: Vec<Vec<f32>>,
    index: usize,
    scratch: Vec<f32>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Apply<'_> {
    type Viewer = ViewTensorMut;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        t: <Self::Viewer as TensorViewer>::View<'_, Tensor<S, f32, D>>,
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let index = self.index;
        self.index += 1;
        self.scratch.resize(t.shape().num_elements(), 0.0);
        t.copy_into(&mut self.scratch);
        let g = std::mem::take(&mut self.grads[index]);
        let mut p = std::mem::take(&mut self.scratch);
        self.opt.update_one(index, &mut p, &g);
        t.copy_from(&p);
        self.scratch = p;
        Ok(None)
    }
}

/// The device path of [`Optimizer::step`] on `Cuda`.
#[cfg(feature = "cuda")]
mod cuda_step {
    use super::*;
    use crate::ops::cuda;
    use cudarc::driver::{DevicePtr, DeviceSlice};
    use dfdx::optim::{Momentum, WeightDecay};
    use dfdx::tensor::CudaError;

    type Buf = <Cuda as Storage<f32>>::Vec;

    /// First and second moments (Adam) or momentum buffers (SGD; `v` empty), one per trainable
    /// tensor in visiting order.
    #[derive(Clone, Debug)]
    pub struct Moments {
        pub m: Vec<Buf>,
        pub v: Vec<Buf>,
    }

    fn device_err(e: CudaError) -> OptimError {
        OptimError::Device(format!("{e:?}"))
    }

    /// A device buffer's values on the host.
    pub fn download(b: &Buf) -> Vec<f32> {
        let mut out = vec![0.0f32; b.len()];
        b.device()
            .dtoh_sync_copy_into(&**b, &mut out)
            .expect("copying the optimiser's moments from the GPU");
        out
    }

    /// Pointers and lengths of every trainable tensor's gradient (allocating zeros for a missing
    /// one, as the host path treats it), and the device.
    struct Collect<'a> {
        grads: &'a mut Gradients<f32, Cuda>,
        out: Vec<(u64, u64)>,
        dev: Option<Cuda>,
    }

    impl TensorVisitor<f32, Cuda> for Collect<'_> {
        type Viewer = ViewTensorRef;
        type Err = CudaError;
        type E2 = f32;
        type D2 = Cuda;

        fn visit<S: Shape>(
            &mut self,
            opts: TensorOptions<S, f32, Cuda>,
            t: &Tensor<S, f32, Cuda>,
        ) -> Result<Option<Tensor<S, f32, Cuda>>, CudaError> {
            if opts.do_gradient_update {
                let g = self.grads.get_or_alloc_mut(t)?;
                self.out.push((*g.device_ptr(), g.len() as u64));
                self.dev.get_or_insert_with(|| t.device().clone());
            }
            Ok(None)
        }
    }

    /// dfdx's fused update of each trainable tensor, in visiting order.
    struct Apply<'a> {
        grads: &'a mut Gradients<f32, Cuda>,
        moments: &'a mut Moments,
        cfg: &'a OptimConfig,
        step: i32,
        index: usize,
    }

    impl TensorVisitor<f32, Cuda> for Apply<'_> {
        type Viewer = ViewTensorMut;
        type Err = CudaError;
        type E2 = f32;
        type D2 = Cuda;

        fn visit<S: Shape>(
            &mut self,
            opts: TensorOptions<S, f32, Cuda>,
            t: &mut Tensor<S, f32, Cuda>,
        ) -> Result<Option<Tensor<S, f32, Cuda>>, CudaError> {
            if !opts.do_gradient_update {
                return Ok(None);
            }
            let i = self.index;
            self.index += 1;
            let c = self.cfg;
            let wd = (c.weight_decay != 0.0).then_some(WeightDecay::L2(c.weight_decay));
            let g = self.grads.get_or_alloc_mut(t)?;
            match c.name {
                OptimizerKind::Adam => dfdx::optim::AdamConfig {
                    lr: c.lr,
                    betas: [c.beta1, c.beta2],
                    eps: c.eps,
                    weight_decay: wd,
                }
                .try_update(
                    self.step,
                    t,
                    &mut self.moments.m[i],
                    &mut self.moments.v[i],
                    g,
                ),
                OptimizerKind::Sgd => dfdx::optim::SgdConfig {
                    lr: c.lr,
                    momentum: Some(Momentum::Classic(c.momentum)),
                    weight_decay: wd,
                }
                .try_update(t, &mut self.moments.m[i], g),
            }?;
            Ok(None)
        }
    }

    pub fn step<M: TensorCollection<f32, Cuda>>(
        opt: &mut Optimizer,
        module: &mut M,
        grads: &mut Gradients<f32, Cuda>,
    ) -> Result<(), OptimError> {
        let mut collect = Collect {
            grads,
            out: Vec::new(),
            dev: None,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: &*module,
            f: &mut collect,
        })
        .map_err(device_err)?;
        let (list, dev) = (collect.out, collect.dev);
        let Some(dev) = dev else {
            opt.state.step += 1;
            return Ok(());
        };
        let counts = cuda::count_nonfinite(&dev, &list).map_err(device_err)?;
        if let Some((index, &count)) = counts.iter().enumerate().find(|(_, &c)| c > 0) {
            return Err(OptimError::NonFiniteGradient {
                index,
                count: count as usize,
            });
        }
        let n_moments = match opt.cfg.name {
            OptimizerKind::Adam => 2,
            OptimizerKind::Sgd => 1,
        };
        if opt.device.is_none() {
            opt.device = Some(upload(&dev, &opt.state, &list, n_moments)?);
            opt.state.m.clear();
            opt.state.v.clear();
        }
        let moments = opt.device.as_mut().expect("set above");
        let sizes_ok = moments.m.len() == list.len()
            && moments
                .m
                .iter()
                .zip(&list)
                .all(|(m, g)| m.len() as u64 == g.1)
            && (n_moments == 1 || moments.v.len() == list.len());
        if !sizes_ok {
            return Err(OptimError::StateMismatch(format!(
                "model has {} trainable tensors, state has {}",
                list.len(),
                moments.m.len()
            )));
        }
        opt.state.step += 1;
        opt.snapshot = Default::default();
        let _p = cuda::profile::scope_on(&dev, "optim.update");
        let mut apply = Apply {
            grads: collect.grads,
            moments,
            cfg: &opt.cfg,
            step: opt.state.step as i32,
            index: 0,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: module,
            f: &mut apply,
        })
        .map_err(device_err)?;
        Ok(())
    }

    /// Device moments from the host state (zeros when it has none), checked against the
    /// gradients' sizes.
    fn upload(
        dev: &Cuda,
        state: &OptimizerState,
        list: &[(u64, u64)],
        n_moments: usize,
    ) -> Result<Moments, OptimError> {
        let fresh = state.m.is_empty();
        let fits = |vs: &[Vec<f32>]| {
            vs.len() == list.len() && vs.iter().zip(list).all(|(v, g)| v.len() as u64 == g.1)
        };
        if !fresh && (!fits(&state.m) || (n_moments == 2 && !fits(&state.v))) {
            return Err(OptimError::StateMismatch(format!(
                "model has {} trainable tensors, state has {}",
                list.len(),
                state.m.len()
            )));
        }
        let make = |host: Option<&Vec<f32>>, len: u64| -> Result<Buf, OptimError> {
            let mut b = dev.try_alloc_len(len as usize).map_err(device_err)?;
            if let Some(h) = host {
                dev.cuda_device()
                    .htod_sync_copy_into(h, &mut *b)
                    .map_err(|e| OptimError::Device(format!("{e:?}")))?;
            }
            Ok(b)
        };
        let mut m = Vec::with_capacity(list.len());
        let mut v = Vec::new();
        for (i, g) in list.iter().enumerate() {
            m.push(make((!fresh).then(|| &state.m[i]), g.1)?);
            if n_moments == 2 {
                v.push(make((!fresh).then(|| &state.v[i]), g.1)?);
            }
        }
        Ok(Moments { m, v })
    }
}

/// Build an optimiser from the config.
pub fn from_config(cfg: &OptimConfig) -> Optimizer {
    Optimizer::new(cfg.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same trajectory as dfdx's own Adam test (`test_default_adam_params` in dfdx 0.13,
    /// itself checked against PyTorch): loss = mean((t * rate)^2), t starts at ones.
    #[test]
    fn adam_matches_dfdx_reference_trajectory() {
        let dev: Cpu = Default::default();
        let mut t: Tensor<Rank1<5>, f32, _> = dev.ones();
        let rate = dev.tensor([1e-6f32, 1e-5, 1e-4, 1e-3, 1e-2]);
        let expected = [
            [0.99999994f32, 0.999996, 0.9997143, 0.9990244, 0.99900025],
            [0.9999999, 0.999992, 0.99942863, 0.99804884, 0.9980005],
            [0.9999998, 0.999988, 0.999143, 0.9970733, 0.9970008],
        ];
        let mut opt = Optimizer::new(OptimConfig::default());
        for e in expected {
            let mut g = (t.leaky_trace() * rate.clone()).square().mean().backward();
            opt.step(&mut t, &mut g).unwrap();
            let got = t.array();
            for (a, b) in got.iter().zip(e) {
                assert!((a - b).abs() < 1e-6, "{got:?} vs {e:?}");
            }
        }
    }

    /// torch.optim.SGD(lr=0.1, momentum=0.9) on f(p) = 0.5 * p^2 from p = 1:
    /// p1 = 1 - 0.1 * 1 = 0.9; buf2 = 0.9 * 1 + 0.9 = 1.8, p2 = 0.9 - 0.18 = 0.72.
    #[test]
    fn sgd_momentum_analytic() {
        let dev: Cpu = Default::default();
        let mut t: Tensor<Rank1<1>, f32, _> = dev.ones();
        let cfg = OptimConfig {
            name: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg);
        for want in [0.9f32, 0.72] {
            let mut g = (t.leaky_trace().square() * 0.5).sum().backward();
            opt.step(&mut t, &mut g).unwrap();
            assert!((t.array()[0] - want).abs() < 1e-6, "{:?}", t.array());
        }
    }

    #[test]
    fn non_finite_gradient_changes_nothing() {
        let dev: Cpu = Default::default();
        let mut t: Tensor<Rank1<2>, f32, _> = dev.tensor([1.0, -1.0]);
        let mut opt = Optimizer::new(OptimConfig::default());
        let mut g = t.leaky_trace().sqrt().sum().backward(); // sqrt(-1) -> NaN gradient
        let err = opt.step(&mut t, &mut g).unwrap_err();
        assert!(
            matches!(err, OptimError::NonFiniteGradient { index: 0, .. }),
            "{err}"
        );
        assert_eq!(t.array(), [1.0, -1.0]);
        assert_eq!(opt.step_count(), 0);
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        let dev: Cpu = Default::default();
        let loss = |t: &Tensor<Rank1<3>, f32, Cpu>| {
            (t.leaky_trace() - dev.tensor([0.5f32, -2.0, 3.0]))
                .square()
                .sum()
                .backward()
        };
        let mut a: Tensor<Rank1<3>, f32, _> = dev.ones();
        let mut opt_a = Optimizer::new(OptimConfig::default());
        for _ in 0..3 {
            let mut g = loss(&a);
            opt_a.step(&mut a, &mut g).unwrap();
        }
        // Save, continue; restore into fresh objects, continue the same way.
        let saved_p = a.as_vec();
        let saved_s = serde_json::to_string(opt_a.state()).unwrap();
        for _ in 0..3 {
            let mut g = loss(&a);
            opt_a.step(&mut a, &mut g).unwrap();
        }
        let mut b: Tensor<Rank1<3>, f32, _> = dev.zeros();
        b.copy_from(&saved_p);
        let mut opt_b = Optimizer::new(OptimConfig::default());
        opt_b.load_state(serde_json::from_str(&saved_s).unwrap());
        for _ in 0..3 {
            let mut g = loss(&b);
            opt_b.step(&mut b, &mut g).unwrap();
        }
        assert_eq!(a.as_vec(), b.as_vec(), "bit-identical after resume");
    }
}

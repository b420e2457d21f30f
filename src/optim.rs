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
    state: OptimizerState,
}

impl Optimizer {
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            state: OptimizerState::default(),
        }
    }

    /// Number of completed update steps.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    pub fn state(&self) -> &OptimizerState {
        &self.state
    }

    /// Restore state saved by [`Optimizer::state`]. Sizes are checked at the next step.
    pub fn load_state(&mut self, state: OptimizerState) {
        self.state = state;
    }

    /// One update of every trainable tensor of `module` from `grads`. A parameter without a
    /// gradient is treated as having a zero gradient.
    pub fn step<M: TensorCollection<f32, D>, D: Device<f32>>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<f32, D>,
    ) -> Result<(), OptimError> {
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
                let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
                let t = self.state.step as i32;
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let m = &mut self.state.m[index];
                let v = &mut self.state.v[index];
                for i in 0..p.len() {
                    let gi = g[i] + wd * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    let mhat = m[i] / bc1;
                    let vhat = v[i] / bc2;
                    p[i] -= lr * mhat / (vhat.sqrt() + eps);
                }
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

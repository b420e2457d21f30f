//! The supervised arm: the config's backbone trained with labels on the probe's training split
//! (the upper bound), then probed like every other arm.

use super::{EvalData, JobError, JobProgress};
use crate::config::ValidConfig;
use crate::eval;
use crate::models::Backbone;
use crate::train::TrainError;

/// The supervised training a config asks for: `train.epochs`, `train.batch_size`, `optim.lr`,
/// `train.seed`, `train.max_steps` at the config's image side (the rest at
/// [`eval::SupervisedConfig`]'s defaults).
pub fn supervised_config(cfg: &ValidConfig) -> eval::SupervisedConfig {
    eval::SupervisedConfig {
        epochs: cfg.train.epochs,
        batch: cfg.train.batch_size,
        lr: cfg.optim.lr,
        seed: cfg.train.seed,
        input_size: cfg.data.image_size,
        max_steps: cfg.train.max_steps,
        ..Default::default()
    }
}

/// Trains `backbone` with labels on `data.train` ([`eval::train_supervised`]) in the run's
/// `train.precision`, reporting the final training accuracy.
pub fn train<B: Backbone<crate::Device>>(
    mut backbone: B,
    dev: &crate::Device,
    cfg: &ValidConfig,
    data: &EvalData,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<B, JobError> {
    cfg.train
        .precision
        .check_supported()
        .map_err(TrainError::from)?;
    backbone.set_precision(cfg.train.precision);
    let report = eval::train_supervised(
        &mut backbone,
        dev,
        &data.train,
        &data.normalize,
        &supervised_config(cfg),
        &mut |_| {},
    )?;
    progress(JobProgress::Eval(format!(
        "supervised: {} epochs, final train acc {:.1}%",
        report.epochs,
        100.0 * report.acc_history.last().copied().unwrap_or(0.0)
    )));
    Ok(backbone)
}

//! Ablation grids: `[run.sweep]` (e.g. `"method.patches" = [2, 3, 4]`) expands the `sr` arm
//! into one arm per value, named `sr method.patches=3`. With one swept key every value is an
//! arm; with several, each key is varied on its own from the base config (one-at-a-time
//! ablations) next to the plain `sr` arm, and values equal to the base are not run twice.

use super::arms::{Arm, ArmKind};
use crate::config::ValidConfig;

/// The arms the `sr` entry of `run.arms` stands for under the config's `[run.sweep]`.
pub fn sr_arms(cfg: &ValidConfig) -> Vec<Arm> {
    let mut arms = Vec::new();
    // One swept key: every value is an arm (the base value included), so the ablation plot has
    // all its points. Several keys (or none): the plain `sr` arm plus one arm per value that
    // differs from the base config.
    let single = cfg.run.sweep.len() == 1;
    if !single {
        arms.push(Arm {
            name: "sr".into(),
            kind: ArmKind::Pretrain,
            overrides: vec![],
        });
    }
    let base = toml::Value::try_from(cfg.raw()).expect("a Config always serialises");
    for (key, values) in &cfg.run.sweep {
        let (section, field) = key.split_once('.').unwrap_or((key, ""));
        let current = base.get(section).and_then(|t| t.get(field));
        for v in values {
            if !single && current == Some(v) {
                continue;
            }
            let value = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let set = format!("{key}={value}");
            arms.push(Arm {
                name: format!("sr {set}"),
                kind: ArmKind::Pretrain,
                overrides: vec![set],
            });
        }
    }
    arms
}

//! The arm registry: what each `run.arms` entry runs, and the run directory of an arm × seed.
//!
//! - `random-init`: the backbone as initialised from the seed, no training (lower bound);
//! - `rr`: relational reasoning alone (`method.patches = 0`, `method.alpha = 0`);
//! - `sr`: the config's method (spatial reasoning with its patches and α), one arm per swept
//!   value with `[run.sweep]` ([`super::sweep`]);
//! - `supervised`: the backbone trained with labels (upper bound), same probe.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobError;
use crate::config::{RunArm, ValidConfig};

/// One arm of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Display name, e.g. `sr`, `rr`, `sr method.patches=3`.
    pub name: String,
    pub kind: ArmKind,
    /// `--set` overrides this arm applies on top of the job's config.
    pub overrides: Vec<String>,
}

impl Arm {
    /// A reference arm: the job's config unchanged.
    fn reference(arm: RunArm, kind: ArmKind) -> Arm {
        Arm {
            name: arm.name().into(),
            kind,
            overrides: vec![],
        }
    }
}

/// What a cell of the arm does: evaluate the seed's initialisation, pretrain then evaluate, or
/// train with labels then evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArmKind {
    RandomInit,
    Pretrain,
    Supervised,
}

/// Expand the config's `[run]` section into arms: `run.arms` in order, the `sr` arm expanded by
/// `[run.sweep]` ([`super::sweep`]). Every arm's config is checked before any work starts.
pub fn expand_arms(cfg: &ValidConfig) -> Result<Vec<Arm>, JobError> {
    let mut arms = Vec::new();
    for &arm in &cfg.run.arms {
        match arm {
            RunArm::RandomInit => arms.push(Arm::reference(arm, ArmKind::RandomInit)),
            RunArm::Supervised => arms.push(Arm::reference(arm, ArmKind::Supervised)),
            RunArm::Rr => arms.push(Arm {
                name: arm.name().into(),
                kind: ArmKind::Pretrain,
                overrides: vec!["method.patches=0".into(), "method.alpha=0".into()],
            }),
            RunArm::Sr => arms.extend(super::sweep::sr_arms(cfg)),
        }
    }
    for arm in &arms {
        cfg.raw().apply_overrides(&arm.overrides)?.check()?;
    }
    Ok(arms)
}

/// The directory of one arm × seed below the job's output directory.
pub fn arm_dir(out: &Path, arm: &str, seed: u64) -> PathBuf {
    out.join(crate::files::slug(arm))
        .join(format!("seed-{seed}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn arms(sets: &[&str]) -> Vec<String> {
        let cfg = Config::default()
            .apply_overrides(sets)
            .unwrap()
            .check()
            .unwrap();
        expand_arms(&cfg)
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect()
    }

    #[test]
    fn sweeps_expand_the_sr_arm() {
        assert_eq!(arms(&["run.arms=[\"rr\", \"sr\"]"]), vec!["rr", "sr"]);
        assert_eq!(
            arms(&[
                "run.arms=[\"sr\"]",
                "run.sweep={\"method.patches\" = [2, 3]}"
            ]),
            vec!["sr method.patches=2", "sr method.patches=3"]
        );
        assert_eq!(
            arms(&[
                "run.arms=[\"random-init\", \"sr\"]",
                "run.sweep={\"method.patch_mode\" = [\"zoom\", \"additive\"], \"method.overlap\" = [\"allowed\"]}",
            ]),
            vec![
                "random-init",
                "sr",
                "sr method.overlap=allowed",
                "sr method.patch_mode=additive"
            ]
        );
    }

    /// The committed study configs expand to the arms their READMEs describe, with the run
    /// directories of the CPU study's cells that `results/cifar10-ablations/runs` reuses.
    #[test]
    fn study_configs_expand_to_their_arms() {
        let expand = |path: &str| {
            let cfg = Config::from_toml_file(Path::new(path))
                .unwrap()
                .check()
                .unwrap();
            expand_arms(&cfg)
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
        };
        let arms = expand("configs/study/cifar10-ablations.toml");
        assert_eq!(
            arms,
            [
                "random-init",
                "rr",
                "sr",
                "sr method.alpha=0.0",
                "sr method.alpha=0.5",
                "sr method.alpha=2.0",
                "sr method.overlap=allowed",
                "sr method.patch_mode=additive",
                "sr method.patch_size=8",
                "sr method.patch_size=16",
                "sr method.patches=3",
                "sr method.patches=4",
                "sr method.target_policy=positive-patches-only",
            ]
        );
        let reused = [
            "random-init",
            "rr",
            "sr",
            "sr_method.patch_mode_additive",
            "sr_method.target_policy_positive-patches-only",
        ];
        for name in reused {
            assert!(
                arms.iter()
                    .any(|a| arm_dir(Path::new("x"), a, 1)
                        == Path::new("x").join(name).join("seed-1")),
                "{name}"
            );
        }
        assert_eq!(
            expand("configs/study/cifar10-long.toml"),
            [
                "rr",
                "sr method.target_policy=reference",
                "sr method.target_policy=positive-patches-only"
            ]
        );
    }

    #[test]
    fn an_invalid_arm_or_value_is_rejected_before_work() {
        // An unknown arm is a parse error naming it and the four arms.
        let e = Config::default()
            .apply_overrides(&["run.arms=[\"sr\", \"byol\"]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("byol") && e.contains("random-init"), "{e}");
        let cfg = Config::default()
            .apply_overrides(&["run.arms=[\"random\"]"])
            .unwrap();
        assert_eq!(
            cfg.run.arms,
            [RunArm::RandomInit],
            "`random` is read as random-init"
        );
        let cfg = Config::default()
            .apply_overrides(&["run.sweep={\"method.patches\" = [2, 99]}"])
            .unwrap()
            .check()
            .unwrap();
        let e = expand_arms(&cfg).unwrap_err().to_string();
        assert!(e.contains("method.patches = 99"), "{e}");
    }
}

//! The `[slurm]` config section: where and with what resources the cells run.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[slurm]`: options of the `sbatch` scripts `run --slurm` writes. Every key may also be given
/// as a flag of `run --slurm` or as `--set slurm.KEY=VALUE`. Unset keys leave the choice to the
/// cluster (its default partition, account, time limit and memory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition` (several may be given comma-separated); unset = the cluster's default.
    pub partition: Option<String>,
    /// `--account`; unset = the user's default account.
    pub account: Option<String>,
    /// `--time` of each cell: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`;
    /// unset = the partition's default. A cell that reaches it checkpoints and stops; running
    /// `run --slurm` again resumes it.
    pub time: Option<String>,
    /// `--cpus-per-task`; also the cell's thread count when `train.threads = 0`.
    pub cpus_per_task: usize,
    /// `--mem` of each cell, e.g. `"16G"`; unset = the cluster's default.
    pub mem: Option<String>,
    /// GPUs per cell (`--gres=gpu:N`), 0 or 1, for binaries built with `--features cuda`. A cell
    /// trains one model on one device: dfdx has no multi-GPU training.
    pub gpus: usize,
    /// At most this many cells run at once (`%M` of `--array`); 0 = no limit.
    pub max_parallel: usize,
    /// Further `sbatch` options, one `#SBATCH` line each, e.g. `["--qos=short"]`.
    pub sbatch_args: Vec<String>,
    /// `--partition` of the report job (one CPU, no GPU, minutes); unset = `partition`. For
    /// clusters whose GPU partitions refuse jobs without a GPU.
    pub report_partition: Option<String>,
    /// The command that runs `spatial-reasoning` on the nodes (a path, or a wrapper such as
    /// `apptainer exec sr.sif spatial-reasoning`); unset = the absolute path of the binary
    /// that submits.
    pub command: Option<String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            time: None,
            cpus_per_task: 4,
            mem: None,
            gpus: 0,
            max_parallel: 0,
            sbatch_args: Vec::new(),
            report_partition: None,
            command: None,
        }
    }
}

/// `sbatch` options the generated scripts set themselves, and the `[slurm]` key (if any) that
/// sets them.
const MANAGED: [(&str, Option<&str>, &str); 14] = [
    ("--array", None, "the cells"),
    ("-a", None, "the cells"),
    ("--output", None, "the log files"),
    ("-o", None, "the log files"),
    ("--error", None, "the log files"),
    ("-e", None, "the log files"),
    ("--open-mode", None, "the log files"),
    ("--chdir", None, "the working directory"),
    ("-D", None, "the working directory"),
    ("--dependency", None, "the report job"),
    ("-d", None, "the report job"),
    ("--partition", Some("partition"), ""),
    ("--time", Some("time"), ""),
    ("--cpus-per-task", Some("cpus_per_task"), ""),
];

impl SlurmConfig {
    /// Validate every key (called by [`crate::config::Config::check`]).
    pub fn check(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, value: &str, message: &str| ConfigError::Slurm {
            key,
            value: format!("{value:?}"),
            message: message.to_string(),
        };
        for (key, value) in [("partition", &self.partition), ("account", &self.account)] {
            if let Some(v) = value {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err(key, v, "expected a name without spaces"));
                }
            }
        }
        if let Some(t) = &self.time {
            if parse_time_minutes(t).is_none() {
                return Err(err(
                    "time",
                    t,
                    "expected a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
                ));
            }
        }
        if self.cpus_per_task == 0 {
            return Err(ConfigError::Slurm {
                key: "cpus_per_task",
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(m) = &self.mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
            let ok = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && m.len() - digits.len() <= 1;
            if !ok {
                return Err(err(
                    "mem",
                    m,
                    "expected a size such as 4000 (MB), 16G or 512M",
                ));
            }
        }
        if self.gpus > 1 {
            return Err(ConfigError::Slurm {
                key: "gpus",
                value: self.gpus.to_string(),
                message: "use 0 or 1: a cell trains one model on one device (dfdx has no multi-GPU training); run more cells at once instead".into(),
            });
        }
        for arg in &self.sbatch_args {
            if !arg.starts_with('-') || arg.chars().any(|c| c == '\n' || c == '\r') {
                return Err(err(
                    "sbatch_args",
                    arg,
                    "each entry is one sbatch option on one line, such as \"--qos=short\"",
                ));
            }
            let name = arg.split(['=', ' ']).next().unwrap_or(arg);
            if let Some((_, key, what)) = MANAGED.iter().find(|(o, _, _)| *o == name) {
                let message = match key {
                    Some(k) => format!("{name} is set by slurm.{k}"),
                    None => format!("{name} is set by the generated script ({what})"),
                };
                return Err(err("sbatch_args", arg, &message));
            }
        }
        if let Some(c) = &self.command {
            if c.trim().is_empty() || c.chars().any(|c| c == '\n' || c == '\r') {
                return Err(err(
                    "command",
                    c,
                    "expected one line that starts spatial-reasoning, e.g. /home/me/bin/spatial-reasoning",
                ));
            }
        }
        Ok(())
    }
}

/// Minutes of a Slurm time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`,
/// or `UNLIMITED`/`INFINITE` as `u64::MAX`), rounded up; `None` if `text` is not one of these.
pub fn parse_time_minutes(text: &str) -> Option<u64> {
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return Some(u64::MAX);
    }
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 9 && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, text),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86_400 + h * 3600,
        (Some(d), [h, m]) => d * 86_400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86_400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(seconds.div_ceil(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn check(sets: &[&str]) -> Result<(), String> {
        Config::default()
            .apply_overrides(sets)
            .map_err(|e| e.to_string())?
            .check()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn time_limits_in_every_slurm_format() {
        assert_eq!(parse_time_minutes("30"), Some(30));
        assert_eq!(parse_time_minutes("30:01"), Some(31));
        assert_eq!(parse_time_minutes("2:00:00"), Some(120));
        assert_eq!(parse_time_minutes("1-12"), Some(36 * 60));
        assert_eq!(parse_time_minutes("1-00:30"), Some(24 * 60 + 30));
        assert_eq!(parse_time_minutes("2-00:00:30"), Some(2 * 24 * 60 + 1));
        assert_eq!(parse_time_minutes("UNLIMITED"), Some(u64::MAX));
        for bad in ["", "2h", "1:2:3:4", "1-", "-1", "1-2:3:4:5", "a:b", "1.5"] {
            assert_eq!(parse_time_minutes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_key_is_validated_with_a_named_error() {
        check(&[
            "slurm.partition=\"gpu,gpu-long\"",
            "slurm.account=proj-42",
            "slurm.time=\"1-12:00:00\"",
            "slurm.cpus_per_task=8",
            "slurm.mem=32G",
            "slurm.gpus=1",
            "slurm.max_parallel=6",
            "slurm.sbatch_args=[\"--qos=short\", \"--constraint=a100\"]",
            "slurm.command=\"apptainer exec sr.sif spatial-reasoning\"",
            "slurm.report_partition=cpu",
        ])
        .unwrap();
        let cases: [(&str, &str); 9] = [
            (
                "slurm.partition=\"gpu long\"",
                "slurm.partition = \"gpu long\"",
            ),
            (
                "slurm.time=2h",
                "slurm.time = \"2h\": expected a Slurm time limit",
            ),
            ("slurm.cpus_per_task=0", "slurm.cpus_per_task = 0"),
            ("slurm.mem=16GB", "slurm.mem = \"16GB\""),
            ("slurm.gpus=2", "slurm.gpus = 2: use 0 or 1"),
            (
                "slurm.sbatch_args=[\"qos=short\"]",
                "slurm.sbatch_args = \"qos=short\"",
            ),
            (
                "slurm.sbatch_args=[\"--array=0-3\"]",
                "--array is set by the generated script (the cells)",
            ),
            (
                "slurm.sbatch_args=[\"--time=10\"]",
                "--time is set by slurm.time",
            ),
            ("slurm.command=\"\"", "slurm.command = \"\""),
        ];
        for (set, want) in cases {
            let e = check(&[set]).unwrap_err();
            assert!(e.contains(want), "{set}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_like_every_config_key() {
        let e = Config::from_toml_str("[slurm]\npartiton = \"gpu\"\n").unwrap_err();
        assert!(e.to_string().contains("partiton"), "{e}");
        let e = Config::default()
            .apply_overrides(&["slurm.gpu=1"])
            .unwrap_err();
        assert!(e.to_string().contains("gpu"), "{e}");
        let c = Config::from_toml_str("[slurm]\npartition = \"gpu\"\ngpus = 1\n").unwrap();
        assert_eq!(c.slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(c.slurm.cpus_per_task, 4, "unset keys keep their defaults");
    }
}

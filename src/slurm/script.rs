//! The two `sbatch` scripts of a submission: the cells' job array and the report job.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{parse_time_minutes, SlurmConfig, SlurmError};

/// Seconds before its time limit that a cell is sent SIGTERM (`--signal=B:TERM@120`).
pub const SIGNAL_BEFORE_S: u64 = 120;
/// The shortest time limit (minutes) that gets the early SIGTERM.
const SIGNAL_MIN_LIMIT: u64 = 10;

/// What the scripts are written for.
#[derive(Clone, Debug)]
pub struct ScriptInputs<'a> {
    /// The job's name (from the plan); Slurm job names are `sr-NAME` and `sr-NAME-report`.
    pub name: &'a str,
    /// The job's output directory, absolute.
    pub out: &'a Path,
    /// The tasks' working directory (`--chdir`), absolute: relative paths in the config (a
    /// data root) mean what they meant where `run --slurm` was called.
    pub workdir: &'a Path,
    /// Shell text that runs `spatial-reasoning` on the nodes ([`SlurmConfig::command`], else
    /// the submitting binary's path, quoted with [`shell_quote`]).
    pub command: &'a str,
    pub slurm: &'a SlurmConfig,
    /// The cells to run (array indices = cell indices of the plan).
    pub cells: &'a [usize],
}

/// The folder of the scripts and logs below the job's output directory.
pub fn slurm_dir(out: &Path) -> PathBuf {
    out.join("slurm")
}

/// `DIR/slurm/cells.sbatch` and `DIR/slurm/report.sbatch`.
pub fn script_paths(out: &Path) -> (PathBuf, PathBuf) {
    let d = slurm_dir(out);
    (d.join("cells.sbatch"), d.join("report.sbatch"))
}

/// The log of cell `index` (every attempt of the cell appends to it).
pub fn cell_log(out: &Path, index: usize) -> PathBuf {
    slurm_dir(out)
        .join("logs")
        .join(format!("cell-{index}.out"))
}

/// `--array` of `cells`: runs of consecutive indices as ranges (`0-3`, `1,4-6`), then `%M`
/// when `max_parallel > 0`. `cells` must be sorted and non-empty.
pub fn array_spec(cells: &[usize], max_parallel: usize) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cells.len() {
        let mut j = i;
        while j + 1 < cells.len() && cells[j + 1] == cells[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cells[i].to_string()
        } else {
            format!("{}-{}", cells[i], cells[j])
        });
        i = j + 1;
    }
    let mut spec = parts.join(",");
    if max_parallel > 0 {
        let _ = write!(spec, "%{max_parallel}");
    }
    spec
}

/// Quote `s` for a POSIX shell (left bare when it holds only safe characters).
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A path that goes into an `#SBATCH` line: sbatch splits those at spaces and expands `%`
/// patterns, so such paths are refused with the reason.
fn sbatch_path(path: &Path) -> Result<String, SlurmError> {
    let text = path.to_str().ok_or_else(|| SlurmError::UnusablePath {
        path: path.to_path_buf(),
        detail: "not valid UTF-8".into(),
    })?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "%\"'\\".contains(*c))
    {
        return Err(SlurmError::UnusablePath {
            path: path.to_path_buf(),
            detail: format!(
                "{c:?} in the path cannot go into an #SBATCH line; use a directory without it"
            ),
        });
    }
    Ok(text.to_string())
}

fn job_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("sr-{clean}")
}

/// The `#SBATCH` lines both scripts share: partition (the report's own when `report`), account,
/// extra arguments.
fn shared_lines(s: &mut String, slurm: &SlurmConfig, report: bool) {
    let partition = match (&slurm.report_partition, report) {
        (Some(p), true) => Some(p),
        _ => slurm.partition.as_ref(),
    };
    if let Some(p) = partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(a) = &slurm.account {
        let _ = writeln!(s, "#SBATCH --account={a}");
    }
    for arg in &slurm.sbatch_args {
        let _ = writeln!(s, "#SBATCH {arg}");
    }
}

/// The job array script: task `i` runs `COMMAND run --out DIR --cell i`, as the task's main
/// process (`exec`, so it receives Slurm's SIGTERM itself). Logs append to
/// `DIR/slurm/logs/cell-i.out` across attempts; `--requeue` lets Slurm requeue a task whose node
/// fails or which is preempted; with a time limit of 10 minutes or more, the cell gets SIGTERM
/// [`SIGNAL_BEFORE_S`] seconds before it.
pub fn cells_script(inp: &ScriptInputs<'_>) -> Result<String, SlurmError> {
    let out = sbatch_path(inp.out)?;
    let workdir = sbatch_path(inp.workdir)?;
    let s = &mut String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# The cells of a spatial-reasoning job, written by `spatial-reasoning run --slurm` ({}).\n\
         # Array task i runs cell i of the plan (its arm, seed and run directory are listed there)\n\
         #   {out}/plan.json\n\
         # and writes only inside that cell's directory. On SIGTERM (time limit, preemption,\n\
         # scancel) a cell stops with a checkpoint; a requeued task, or `run --slurm` again with the\n\
         # same config, resumes it. The report job (report.sbatch beside this file) runs after every\n\
         # task has ended.",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(s, "#SBATCH --job-name={}", job_name(inp.name));
    let _ = writeln!(
        s,
        "#SBATCH --array={}",
        array_spec(inp.cells, inp.slurm.max_parallel)
    );
    let _ = writeln!(s, "#SBATCH --output={out}/slurm/logs/cell-%a.out");
    let _ = writeln!(s, "#SBATCH --open-mode=append");
    let _ = writeln!(s, "#SBATCH --chdir={workdir}");
    let _ = writeln!(s, "#SBATCH --requeue");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", inp.slurm.cpus_per_task);
    if let Some(t) = &inp.slurm.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
        // SIGTERM two minutes before the limit, to the task itself (`B:`: the batch step is the
        // cell, which `exec` made the main process), so the cell's last step and checkpoint
        // need not fit into the cluster's KillWait after the limit.
        if parse_time_minutes(t).is_some_and(|m| m >= SIGNAL_MIN_LIMIT) {
            let _ = writeln!(s, "#SBATCH --signal=B:TERM@{SIGNAL_BEFORE_S}");
        }
    }
    if let Some(m) = &inp.slurm.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    if inp.slurm.gpus > 0 {
        let _ = writeln!(s, "#SBATCH --gres=gpu:{}", inp.slurm.gpus);
    }
    shared_lines(s, inp.slurm, false);
    let _ = writeln!(
        s,
        "exec {} run --out {} --cell \"$SLURM_ARRAY_TASK_ID\"",
        inp.command,
        shell_quote(&out)
    );
    Ok(std::mem::take(s))
}

/// The report job's script: `COMMAND run --out DIR --merge`, one CPU, at most 30 minutes (or
/// the cells' limit when shorter), no GPU.
pub fn report_script(inp: &ScriptInputs<'_>) -> Result<String, SlurmError> {
    let out = sbatch_path(inp.out)?;
    let workdir = sbatch_path(inp.workdir)?;
    let s = &mut String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# The report of a spatial-reasoning job, written by `spatial-reasoning run --slurm` ({}).\n\
         # Merges every finished cell of the plan\n\
         #   {out}/plan.json\n\
         # into results.csv, report.md and plots/ beside it, naming the cells that failed or did\n\
         # not finish. Submitted with --dependency=afterany:<the cells' job>.",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(s, "#SBATCH --job-name={}-report", job_name(inp.name));
    let _ = writeln!(s, "#SBATCH --output={out}/slurm/logs/report-%j.out");
    let _ = writeln!(s, "#SBATCH --chdir={workdir}");
    let _ = writeln!(s, "#SBATCH --cpus-per-task=1");
    let minutes = inp
        .slurm
        .time
        .as_deref()
        .and_then(parse_time_minutes)
        .unwrap_or(30)
        .clamp(1, 30);
    let _ = writeln!(s, "#SBATCH --time={minutes}");
    shared_lines(s, inp.slurm, true);
    let _ = writeln!(
        s,
        "exec {} run --out {} --merge",
        inp.command,
        shell_quote(&out)
    );
    Ok(std::mem::take(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs_and_cap_parallel_tasks() {
        assert_eq!(array_spec(&[0, 1, 2, 3], 0), "0-3");
        assert_eq!(array_spec(&[0, 1, 2, 3], 2), "0-3%2");
        assert_eq!(array_spec(&[1, 4, 5, 6, 9], 0), "1,4-6,9");
        assert_eq!(array_spec(&[7], 3), "7%3");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/opt/bin/sr"), "/opt/bin/sr");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    fn inputs<'a>(slurm: &'a SlurmConfig, cells: &'a [usize]) -> ScriptInputs<'a> {
        ScriptInputs {
            name: "study c10",
            out: Path::new("/scratch/me/runs/c10"),
            workdir: Path::new("/home/me/sr"),
            command: "/home/me/bin/spatial-reasoning",
            slurm,
            cells,
        }
    }

    #[test]
    fn cells_script_runs_one_cell_per_task_with_every_option() {
        let slurm = SlurmConfig {
            partition: Some("gpu".into()),
            account: Some("proj".into()),
            time: Some("12:00:00".into()),
            cpus_per_task: 8,
            mem: Some("32G".into()),
            gpus: 1,
            max_parallel: 6,
            sbatch_args: vec!["--qos=normal".into()],
            report_partition: None,
            command: None,
        };
        let s = cells_script(&inputs(&slurm, &[0, 1, 2, 5])).unwrap();
        for line in [
            "#SBATCH --job-name=sr-study_c10\n",
            "#SBATCH --array=0-2,5%6\n",
            "#SBATCH --output=/scratch/me/runs/c10/slurm/logs/cell-%a.out\n",
            "#SBATCH --open-mode=append\n",
            "#SBATCH --chdir=/home/me/sr\n",
            "#SBATCH --requeue\n",
            "#SBATCH --cpus-per-task=8\n",
            "#SBATCH --time=12:00:00\n#SBATCH --signal=B:TERM@120\n",
            "#SBATCH --mem=32G\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --account=proj\n",
            "#SBATCH --qos=normal\n",
            "\nexec /home/me/bin/spatial-reasoning run --out /scratch/me/runs/c10 --cell \"$SLURM_ARRAY_TASK_ID\"\n",
        ] {
            assert!(s.contains(line), "missing {line:?} in\n{s}");
        }
        // sbatch reads options only from the #SBATCH lines before the first command.
        let first_command = s
            .lines()
            .position(|l| !l.starts_with('#'))
            .expect("a command");
        assert!(s
            .lines()
            .skip(first_command)
            .all(|l| !l.starts_with("#SBATCH")));
        let r = report_script(&inputs(&slurm, &[0])).unwrap();
        assert!(r.contains("#SBATCH --time=30\n") && r.contains("#SBATCH --cpus-per-task=1\n"));
        let own = SlurmConfig {
            report_partition: Some("cpu".into()),
            ..slurm.clone()
        };
        let r2 = report_script(&inputs(&own, &[0])).unwrap();
        assert!(
            r2.contains("#SBATCH --partition=cpu\n") && !r2.contains("=gpu"),
            "{r2}"
        );
        let s2 = cells_script(&inputs(&own, &[0])).unwrap();
        assert!(s2.contains("#SBATCH --partition=gpu\n"), "{s2}");
        assert!(!r.contains("--gres") && !r.contains("--mem") && !r.contains("--array"));
        assert!(
            r.contains("#SBATCH --partition=gpu\n#SBATCH --account=proj\n#SBATCH --qos=normal\n")
        );
        assert!(r.ends_with(
            "exec /home/me/bin/spatial-reasoning run --out /scratch/me/runs/c10 --merge\n"
        ));
    }

    #[test]
    fn defaults_leave_the_choice_to_the_cluster() {
        let slurm = SlurmConfig::default();
        let s = cells_script(&inputs(&slurm, &[0, 1])).unwrap();
        assert!(s.contains("#SBATCH --array=0-1\n#SBATCH"));
        for absent in ["--partition", "--account", "--time", "--mem", "--gres"] {
            assert!(!s.contains(absent), "{absent} in\n{s}");
        }
        let short = SlurmConfig {
            time: Some("10".into()),
            ..SlurmConfig::default()
        };
        let r = report_script(&inputs(&short, &[0])).unwrap();
        assert!(r.contains("#SBATCH --time=10\n"), "{r}");
        let s = cells_script(&inputs(&short, &[0])).unwrap();
        assert!(
            s.contains("#SBATCH --time=10\n#SBATCH --signal=B:TERM@120\n"),
            "{s}"
        );
        let shorter = SlurmConfig {
            time: Some("9".into()),
            ..SlurmConfig::default()
        };
        let s = cells_script(&inputs(&shorter, &[0])).unwrap();
        assert!(!s.contains("--signal"), "a limit under 10 minutes: {s}");
    }

    #[test]
    fn paths_sbatch_cannot_hold_are_refused_by_name() {
        let slurm = SlurmConfig::default();
        for bad in ["/runs/my run", "/runs/50%"] {
            let mut inp = inputs(&slurm, &[0]);
            inp.out = Path::new(bad);
            let e = cells_script(&inp).unwrap_err().to_string();
            assert!(e.starts_with(bad) && e.contains("#SBATCH"), "{e}");
        }
    }
}

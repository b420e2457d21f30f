//! Talking to Slurm: `sbatch` to submit, `squeue` to see what is still queued, and the log of
//! submissions in `DIR/slurm/submissions.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{file_err, script::slurm_dir, SlurmError};

/// One `run --slurm` submission: a line of `DIR/slurm/submissions.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// RFC 3339 UTC.
    pub time: String,
    /// Seconds since the Unix epoch (for wall times).
    pub unix_time: u64,
    /// The job array's id.
    pub cells_job: String,
    /// The report job's id.
    pub report_job: String,
    /// The cells submitted (array indices).
    pub cells: Vec<usize>,
}

fn submissions_path(out: &Path) -> PathBuf {
    slurm_dir(out).join("submissions.jsonl")
}

/// Every submission recorded for `out`, oldest first (none when the file does not exist).
pub fn read_submissions(out: &Path) -> Result<Vec<Submission>, SlurmError> {
    let path = submissions_path(out);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| file_err(&path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Append `s` to `DIR/slurm/submissions.jsonl` (one write of one line).
pub fn record_submission(out: &Path, s: &Submission) -> Result<(), SlurmError> {
    let path = submissions_path(out);
    let mut line = serde_json::to_vec(s).expect("a submission serialises");
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| file_err(&path, e))?;
    f.write_all(&line).map_err(|e| file_err(&path, e))
}

/// Run a Slurm client command; its stdout, or a named error.
fn slurm_command(program: &str, args: &[String]) -> Result<(bool, String, String), SlurmError> {
    let output = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SlurmError::NoSlurm {
                program: program.to_string(),
            }
        } else {
            SlurmError::Command {
                command: program.to_string(),
                status: "could not start".into(),
                stderr: e.to_string(),
            }
        }
    })?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        format!(
            "{} (exit status {})",
            String::from_utf8_lossy(&output.stderr).trim(),
            output.status
        ),
    ))
}

/// `sbatch --parsable [--dependency=afterany:AFTER] SCRIPT`: the new job's id.
pub fn sbatch(script: &Path, after: Option<&str>) -> Result<String, SlurmError> {
    let mut args = vec!["--parsable".to_string()];
    if let Some(id) = after {
        args.push(format!("--dependency=afterany:{id}"));
    }
    args.push(script.display().to_string());
    let (ok, stdout, stderr) = slurm_command("sbatch", &args)?;
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !ok || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::Command {
            command: format!("sbatch {}", args.join(" ")),
            status: if ok {
                "no job id printed".into()
            } else {
                "refused".into()
            },
            stderr: format!("{} {stderr}", stdout.trim()),
        });
    }
    Ok(id)
}

/// Which of `jobs` (job or array ids) still have a task in the queue, pending or running.
/// Jobs Slurm no longer knows count as gone.
pub fn still_queued(jobs: &[String]) -> Result<Vec<String>, SlurmError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    // One id at a time: squeue rejects a list in which no id is known any more.
    for job in jobs {
        let args = [
            "-h".to_string(),
            "-j".into(),
            job.clone(),
            "-o".into(),
            "%F".into(),
        ];
        let (ok, stdout, stderr) = slurm_command("squeue", &args)?;
        if !ok {
            if stderr.contains("Invalid job id") {
                continue;
            }
            return Err(SlurmError::Command {
                command: format!("squeue {}", args.join(" ")),
                status: "failed".into(),
                stderr,
            });
        }
        if stdout.lines().any(|l| l.trim() == job) {
            queued.push(job.clone());
        }
    }
    Ok(queued)
}

/// The queue state (`PENDING`, `RUNNING`, …) of each task of array job `job` still queued, by
/// array index.
pub fn task_states(job: &str) -> Result<Vec<(usize, String)>, SlurmError> {
    let args = [
        "-h".to_string(),
        "-r".into(),
        "-j".into(),
        job.to_string(),
        "-o".into(),
        "%K %T".into(),
    ];
    let (ok, stdout, stderr) = slurm_command("squeue", &args)?;
    if !ok {
        if stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        return Err(SlurmError::Command {
            command: format!("squeue {}", args.join(" ")),
            status: "failed".into(),
            stderr,
        });
    }
    Ok(stdout
        .lines()
        .filter_map(|l| {
            let (k, t) = l.trim().split_once(' ')?;
            Some((k.parse().ok()?, t.trim().to_string()))
        })
        .collect())
}

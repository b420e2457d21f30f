//! `run --slurm` against a real Slurm cluster (CI: the single-node cluster of
//! `scripts/slurm-local.sh`, started by `scripts/test.sh` around these tests):
//!
//! - a tiny synthetic job (two arms × two seeds) submitted with `run --slurm` gives the same
//!   numbers as a local `run` of the same config (runs are deterministic per seed);
//! - interruptions lose nothing: one running task is requeued (`scontrol requeue`, what
//!   preemption does: SIGTERM, then the task runs again with `SLURM_RESTART_COUNT=1`) and
//!   resumes from its checkpoint; another is cancelled (`scancel`: SIGTERM), named as
//!   interrupted in the merged report, and `run --slurm` again submits only that cell, which
//!   resumes. The job ends with the local run's numbers and metrics, every metrics row once;
//! - a node failure: on the local test cluster only, slurmd, the task's slurmstepd and the task
//!   are SIGKILLed mid-training (the node crashed); once the node is DOWN Slurm requeues the
//!   task, and when slurmd is back the task resumes from its newest checkpoint and ends with the
//!   local run's metrics, every row once;
//! - a failing cell (a diverging learning rate) is named in the merged report and the other
//!   cell finishes.
//!
//! The tests are `#[ignore]`d in the plain `cargo test` (no cluster there); run them with
//! `cargo test --release --test slurm_cluster -- --ignored --test-threads=1` with `SLURM_CONF`
//! pointing at a cluster. Without a reachable cluster they fail when `CI=true` and print
//! "skipped" otherwise. Each cell asks for one CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use spatial_reasoning::report::read_results_csv;
use spatial_reasoning::slurm::{read_submissions, Attempt, AttemptState};
use spatial_reasoning::train::checkpoint::SLOW_CHECKPOINT_ENV;
use spatial_reasoning::train::metrics::{self, RowKind};

const BIN: &str = env!("CARGO_BIN_EXE_spatial-reasoning");
const DEADLINE: Duration = Duration::from_secs(300);

/// Two arms × two seeds: 256 / 32 = 8 steps per epoch, 2 epochs, a checkpoint every 2 steps.
const CONFIG: &str = r#"
[data]
dataset = "synthetic"
train_size = 256
test_size = 64

[backbone]
name = "conv4"

[method]
views = 2
patches = 2

[train]
epochs = 2
batch_size = 32
log_every = 1
checkpoint_every = 2
threads = 1

[eval]
linear_epochs = 3
knn_k = 10
probe_patches = [0]

[run]
arms = ["rr", "sr"]
seeds = [1, 2]

[slurm]
cpus_per_task = 1
"#;
const STEPS: u64 = 16;

/// Whether a cluster answers; without one, fail under CI and say "skipped" elsewhere.
fn cluster() -> bool {
    let answer = Command::new("sinfo").args(["-h", "-o", "%T"]).output();
    let why = match answer {
        Ok(o) if o.status.success() && !String::from_utf8_lossy(&o.stdout).trim().is_empty() => {
            return true
        }
        Ok(o) => format!(
            "sinfo failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("sinfo not runnable: {e}"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("no Slurm cluster reachable under CI ({why}); scripts/test.sh starts one with scripts/slurm-local.sh");
    }
    eprintln!("skipped: no Slurm cluster reachable ({why})");
    false
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-slurm-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn check(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn sr(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove(SLOW_CHECKPOINT_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    check(
        cmd.output().unwrap(),
        &format!("spatial-reasoning {args:?}"),
    )
}

fn slurm(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

/// `run --slurm`: the array and report job ids it printed.
fn submit(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let stdout = sr(args, env);
    let id = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {stdout:?}"))
            .to_string()
    };
    (id("cells job "), id("report job "))
}

/// The queue state (`PENDING`, `RUNNING`, …) of a job or array task; `None` once it left the
/// queue.
fn queue_state(job: &str) -> Option<String> {
    let o = slurm("squeue", &["-h", "-j", job, "-o", "%T"]);
    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !text.is_empty()).then_some(text)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_gone(jobs: &[&str]) {
    for job in jobs {
        wait_until(&format!("job {job} to leave the queue"), || {
            queue_state(job).is_none()
        });
    }
}

/// `(arm, seed, metric, n) → value` of a results CSV.
fn numbers(csv: &Path) -> BTreeMap<(String, u64, String, usize), f64> {
    read_results_csv(csv)
        .unwrap()
        .into_iter()
        .map(|r| ((r.arm, r.seed, r.metric, r.probe_patches), r.value))
        .collect()
}

/// The results table of a report.md (its lines starting with `|`).
fn table(report: &Path) -> Vec<String> {
    std::fs::read_to_string(report)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(String::from)
        .collect()
}

/// The training numbers of a run's metrics rows (timing columns differ between runs).
fn training(dir: &Path) -> Vec<(RowKind, u64, String)> {
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.kind,
                r.step,
                format!(
                    "{} {} {} {} {}",
                    r.loss, r.loss_relation, r.loss_distance, r.relation_acc, r.skipped
                ),
            )
        })
        .collect()
}

fn attempt(dir: &Path) -> Attempt {
    serde_json::from_str(&std::fs::read_to_string(dir.join("attempt.json")).unwrap()).unwrap()
}

fn reached(dir: &Path, step: u64) -> bool {
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .map(|rows| rows.iter().any(|r| r.step >= step))
        .unwrap_or(false)
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/test.sh starts one (scripts/slurm-local.sh)"]
fn slurm_matches_a_local_run_and_interrupted_cells_lose_nothing() {
    if !cluster() {
        return;
    }
    let dir = tmp("match");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (local, clean, hit) = (
        dir.join("local"),
        dir.join("slurm"),
        dir.join("interrupted"),
    );

    // The reference: a local run of the same config.
    let t = Instant::now();
    sr(&["run", "--config", s(&cfg), "--out", s(&local)], &[]);
    eprintln!("local run: {:.1} s", t.elapsed().as_secs_f64());

    // 1. The same job through Slurm.
    let t = Instant::now();
    let (cells, report) = submit(
        &["run", "--config", s(&cfg), "--out", s(&clean), "--slurm"],
        &[],
    );
    wait_gone(&[&cells, &report]);
    eprintln!(
        "slurm run: {:.1} s (jobs {cells}, {report})",
        t.elapsed().as_secs_f64()
    );
    let want = numbers(&local.join("results.csv"));
    assert_eq!(want.len(), 8, "4 cells × (linear n=0, kNN)");
    assert_eq!(numbers(&clean.join("results.csv")), want);
    assert_eq!(
        std::fs::read_to_string(clean.join("summary.csv")).unwrap(),
        std::fs::read_to_string(local.join("summary.csv")).unwrap()
    );
    assert_eq!(
        table(&clean.join("report.md")),
        table(&local.join("report.md"))
    );
    for cell in ["rr/seed-1", "sr/seed-1", "rr/seed-2", "sr/seed-2"] {
        assert_eq!(
            training(&clean.join(cell)),
            training(&local.join(cell)),
            "{cell}"
        );
    }
    let merged =
        std::fs::read_to_string(clean.join(format!("slurm/logs/report-{report}.out"))).unwrap();
    assert!(merged.contains("merged 4 of 4 cells"), "{merged}");

    // 2. Interruptions. Checkpoints are slowed (150 ms per file) so that the signals land
    // mid-training; cells 0 and 1 run at once (one CPU each).
    let slow = [(SLOW_CHECKPOINT_ENV, "150")];
    let t = Instant::now();
    let (cells, report) = submit(
        &["run", "--config", s(&cfg), "--out", s(&hit), "--slurm"],
        &slow,
    );
    let (c0, c1) = (hit.join("rr/seed-1"), hit.join("sr/seed-1"));
    let (task0, task1) = (format!("{cells}_0"), format!("{cells}_1"));
    let (mut requeued, mut cancelled) = (false, false);
    wait_until("cells 0 and 1 to reach step 3", || {
        if !requeued && reached(&c0, 3) {
            // What preemption with PreemptMode=REQUEUE does: SIGTERM, then the task is queued again.
            check(slurm("scontrol", &["requeue", &task0]), "scontrol requeue");
            requeued = true;
        }
        if !cancelled && reached(&c1, 3) {
            check(slurm("scancel", &[&task1]), "scancel");
            cancelled = true;
        }
        requeued && cancelled
    });
    // A requeued task is held for a while (BeginTime); let it start now.
    wait_until("the requeued task to be pending again", || {
        queue_state(&task0).as_deref() == Some("PENDING")
    });
    check(
        slurm(
            "scontrol",
            &["update", &format!("jobid={task0}"), "StartTime=now"],
        ),
        "scontrol update StartTime=now",
    );
    wait_gone(&[&cells, &report]);
    let a0 = attempt(&c0);
    assert_eq!(
        (a0.state, a0.restart_count),
        (AttemptState::Finished, 1),
        "{a0:?}"
    );
    let log0 = std::fs::read_to_string(hit.join("slurm/logs/cell-0.out")).unwrap();
    assert!(
        log0.contains("SLURM_RESTART_COUNT=0") && log0.contains("SLURM_RESTART_COUNT=1"),
        "{log0}"
    );
    assert!(log0.contains("resumed from step"), "{log0}");
    let a1 = attempt(&c1);
    assert_eq!(a1.state, AttemptState::Interrupted, "{a1:?}");
    let stopped = a1.step.unwrap();
    assert!((3..STEPS).contains(&stopped), "{a1:?}");
    let md = std::fs::read_to_string(hit.join("report.md")).unwrap();
    assert!(md.contains("**1 cell(s) without results**"), "{md}");
    assert!(
        md.contains(&format!(
            "| 1 | sr | 1 | interrupted (job {task1}): stopped by a signal at step {stopped} of {STEPS}"
        )),
        "{md}"
    );
    assert_eq!(
        numbers(&hit.join("results.csv")).len(),
        6,
        "three cells' rows"
    );

    // Submitting again runs only the interrupted cell, which resumes from its checkpoint.
    let (cells2, report2) = submit(
        &["run", "--config", s(&cfg), "--out", s(&hit), "--slurm"],
        &[],
    );
    let last = read_submissions(&hit).unwrap().pop().unwrap();
    assert_eq!(last.cells, vec![1]);
    let script = std::fs::read_to_string(hit.join("slurm/cells.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=1\n"), "{script}");
    wait_gone(&[&cells2, &report2]);
    eprintln!(
        "interrupted job, both submissions: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let log1 = std::fs::read_to_string(hit.join("slurm/logs/cell-1.out")).unwrap();
    assert!(
        log1.contains(&format!("resumed from step {stopped}")),
        "{log1}"
    );
    assert_eq!(attempt(&c1).state, AttemptState::Finished);

    // Nothing lost, nothing twice: the local run's numbers and metrics rows.
    assert_eq!(numbers(&hit.join("results.csv")), want);
    assert_eq!(
        table(&hit.join("report.md")),
        table(&local.join("report.md"))
    );
    assert!(!std::fs::read_to_string(hit.join("report.md"))
        .unwrap()
        .contains("without results"));
    for cell in ["rr/seed-1", "sr/seed-1", "rr/seed-2", "sr/seed-2"] {
        let rows = training(&hit.join(cell));
        let steps: Vec<u64> = rows
            .iter()
            .filter(|r| r.0 == RowKind::Step)
            .map(|r| r.1)
            .collect();
        assert_eq!(
            steps,
            (1..=STEPS).collect::<Vec<_>>(),
            "{cell}: every step once"
        );
        assert_eq!(rows, training(&local.join(cell)), "{cell}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/test.sh starts one (scripts/slurm-local.sh)"]
fn a_failing_cell_is_named_and_the_others_finish() {
    if !cluster() {
        return;
    }
    let dir = tmp("fail");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.join("job");
    // Two SR cells of seed 1; the second's learning rate makes the loss NaN at step 2.
    let (cells, report) = submit(
        &[
            "run",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
            "--slurm",
            "--seeds",
            "1",
            "--set",
            "run.arms=[\"sr\"]",
            "--set",
            "run.sweep={\"optim.lr\" = [1e-3, 1e30]}",
        ],
        &[],
    );
    wait_gone(&[&cells, &report]);
    // Slurm saw the task fail (the state stays visible for MinJobAge).
    let shown = check(
        slurm("scontrol", &["-o", "show", "job", &format!("{cells}_1")]),
        "scontrol show job",
    );
    assert!(shown.contains("JobState=FAILED"), "{shown}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**1 cell(s) without results**"), "{md}");
    assert!(
        md.contains(&format!(
            "| 1 | sr optim.lr=1000000000000000000000000000000.0 | 1 | failed (job {cells}_1): non-finite loss (NaN) at step 2"
        )),
        "{md}"
    );
    let rows = read_results_csv(&out.join("results.csv")).unwrap();
    assert_eq!(rows.len(), 2, "the finished cell's linear and kNN rows");
    assert!(
        rows.iter().all(|r| r.arm == "sr optim.lr=0.001"),
        "{rows:?}"
    );
    assert!(md.contains("| sr optim.lr=0.001 | 1 |"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scontrol show config` as key → value.
fn slurm_config() -> BTreeMap<String, String> {
    let text = check(
        slurm("scontrol", &["show", "config"]),
        "scontrol show config",
    );
    text.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(") ").next().unwrap_or("").split(' ').next();
            state != Some("Z")
        })
        .unwrap_or(false)
}

/// Starts slurmd again when dropped (also when the test fails half-way), unless it runs.
struct Revive {
    pid_file: PathBuf,
}

impl Revive {
    fn pid(&self) -> String {
        std::fs::read_to_string(&self.pid_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
    fn start(&self) {
        if !alive(&self.pid()) {
            check(slurm("slurmd", &[]), "slurmd");
        }
    }
}

impl Drop for Revive {
    fn drop(&mut self) {
        self.start();
    }
}

fn kill9(pid: &str) {
    assert!(Command::new("kill")
        .args(["-9", pid])
        .status()
        .unwrap()
        .success());
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/test.sh starts one (scripts/slurm-local.sh)"]
fn a_node_failure_requeues_the_task_which_resumes_from_its_checkpoint() {
    if !cluster() {
        return;
    }
    // This kills the node's daemons: only on the cluster of scripts/slurm-local.sh.
    let conf = slurm_config();
    if conf.get("ClusterName").map(String::as_str) != Some("sr-local") {
        let why = format!(
            "not the local test cluster (ClusterName {:?})",
            conf.get("ClusterName")
        );
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{why} under CI"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let revive = Revive {
        pid_file: PathBuf::from(&conf["SlurmdPidFile"]),
    };
    let dir = tmp("node");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (local, out) = (dir.join("local"), dir.join("job"));
    let job = |out: &Path| -> Vec<String> {
        [
            "run",
            "--config",
            s(&cfg),
            "--out",
            s(out),
            "--seeds",
            "1",
            "--set",
            "run.arms=[\"rr\"]",
        ]
        .map(String::from)
        .to_vec()
    };
    let local_args = job(&local);
    sr(
        &local_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let mut args = job(&out);
    args.push("--slurm".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cells, report) = submit(&args, &[(SLOW_CHECKPOINT_ENV, "150")]);
    let task = format!("{cells}_0");
    let cell = out.join("rr/seed-1");
    wait_until("the cell to reach step 3", || {
        reached(&cell, 3) && cell.join("attempt.json").exists()
    });

    // The node crashes: its slurmd, the task's slurmstepd and the task die at once.
    let pid = attempt(&cell).pid.to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let stepd = stat
        .rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    let comm = std::fs::read_to_string(format!("/proc/{stepd}/comm")).unwrap();
    assert_eq!(comm.trim(), "slurmstepd", "the task's parent");
    let t = Instant::now();
    kill9(&revive.pid());
    kill9(&stepd);
    kill9(&pid);
    let killed_at = metrics::read_rows(&cell.join("metrics.jsonl"))
        .unwrap()
        .len();
    wait_until("the node to go DOWN", || {
        let o = slurm("sinfo", &["-h", "-o", "%T"]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .starts_with("down")
    });
    eprintln!(
        "node DOWN {:.1} s after the crash (SlurmdTimeout {})",
        t.elapsed().as_secs_f64(),
        conf["SlurmdTimeout"]
    );
    revive.start();
    wait_until("the requeued task to be pending", || {
        queue_state(&task).as_deref() == Some("PENDING")
    });
    check(
        slurm(
            "scontrol",
            &["update", &format!("jobid={task}"), "StartTime=now"],
        ),
        "scontrol update StartTime=now",
    );
    wait_gone(&[&cells, &report]);
    eprintln!("crash to report: {:.1} s", t.elapsed().as_secs_f64());

    let a = attempt(&cell);
    assert_eq!(
        (a.state, a.restart_count),
        (AttemptState::Finished, 1),
        "{a:?}"
    );
    let log = std::fs::read_to_string(out.join("slurm/logs/cell-0.out")).unwrap();
    assert!(
        log.contains("SLURM_RESTART_COUNT=1") && log.contains("resumed from step"),
        "{log}"
    );
    let rows = training(&cell);
    assert!(rows.len() > killed_at, "the rerun added the missing rows");
    let steps: Vec<u64> = rows
        .iter()
        .filter(|r| r.0 == RowKind::Step)
        .map(|r| r.1)
        .collect();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>(), "every step once");
    assert_eq!(rows, training(&local.join("rr/seed-1")));
    assert_eq!(
        numbers(&out.join("results.csv")),
        numbers(&local.join("results.csv"))
    );
    assert!(!std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("without results"));
    let _ = std::fs::remove_dir_all(&dir);
}

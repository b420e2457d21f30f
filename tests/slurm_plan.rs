//! `run --slurm` without a cluster: the plan, the dry-run scripts, the refusals, and the cell and
//! merge commands that the array tasks and the report job run (here run directly, outside
//! Slurm), including a cell stopped by SIGTERM that resumes. The same commands on a real
//! cluster: `tests/slurm_cluster.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spatial_reasoning::slurm::{Attempt, AttemptState, Plan};
use spatial_reasoning::train::metrics;

const BIN: &str = env!("CARGO_BIN_EXE_spatial-reasoning");

/// Two arms × two seeds of a tiny synthetic job: 256 / 32 = 8 steps per epoch, 2 epochs.
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
"#;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-slurm-plan-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{CONFIG}\n{extra}")).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("run")
        .args(args)
        .output()
        .expect("spawn the spatial-reasoning binary")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "run {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "run {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn dry_run_plans_the_cells_and_writes_the_scripts() {
    let dir = tmp("dry");
    let cfg = write_config(
        &dir,
        "tiny",
        "[slurm]\npartition = \"gpu\"\ncpus_per_task = 2\n",
    );
    let out = dir.join("job");
    let (stdout, stderr) = ok(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
        "--time",
        "1:00:00",
        "--max-parallel",
        "3",
        "--sbatch-arg=--qos=short",
    ]);
    // Seeds outermost, then the arms: the order of a local run.
    let plan = Plan::load(&out).unwrap();
    let cells: Vec<(usize, &str, u64, &str)> = plan
        .cells
        .iter()
        .map(|c| {
            (
                c.index,
                c.arm.name.as_str(),
                c.seed,
                c.dir.to_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        vec![
            (0, "rr", 1, "rr/seed-1"),
            (1, "sr", 1, "sr/seed-1"),
            (2, "rr", 2, "rr/seed-2"),
            (3, "sr", 2, "sr/seed-2"),
        ]
    );
    assert_eq!(plan.name, "tiny");
    assert_eq!(plan.seeds, vec![1, 2]);
    let planned = spatial_reasoning::config::Config::from_toml_str(&plan.config).unwrap();
    assert_eq!(
        planned.slurm,
        Default::default(),
        "the plan's config leaves out [slurm]"
    );
    let script = std::fs::read_to_string(out.join("slurm/cells.sbatch")).unwrap();
    let abs = std::path::absolute(&out).unwrap();
    for line in [
        "#SBATCH --array=0-3%3\n".to_string(),
        "#SBATCH --partition=gpu\n".into(),
        "#SBATCH --cpus-per-task=2\n".into(),
        "#SBATCH --time=1:00:00\n".into(),
        "#SBATCH --qos=short\n".into(),
        format!(
            "#SBATCH --output={}/slurm/logs/cell-%a.out\n",
            abs.display()
        ),
        format!(
            "exec {BIN} run --out {} --cell \"$SLURM_ARRAY_TASK_ID\"\n",
            abs.display()
        ),
    ] {
        assert!(script.contains(&line), "{line:?} missing in\n{script}");
    }
    let report = std::fs::read_to_string(out.join("slurm/report.sbatch")).unwrap();
    assert!(report.contains(&format!("exec {BIN} run --out {} --merge\n", abs.display())));
    assert!(
        stdout.contains(&script) && stdout.contains(&report),
        "{stdout}"
    );
    assert!(stderr.contains("dry run: nothing submitted"), "{stderr}");
    assert!(!out.join("slurm/submissions.jsonl").exists());
    // Nothing ran under the plan yet: a different config replaces it.
    let cfg2 = write_config(&dir, "tiny", "[slurm]\npartition = \"gpu\"\n");
    ok(&[
        "--config",
        s(&cfg2),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
        "--set",
        "train.epochs=3",
    ]);
    assert!(Plan::load(&out).unwrap().config.contains("epochs = 3"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_and_cells_are_refused_by_name() {
    let dir = tmp("bad");
    let cfg = write_config(&dir, "tiny", "[slurm]\npartiton = \"gpu\"\n");
    let out = dir.join("job");
    let e = fails(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
    ]);
    assert!(e.contains("partiton"), "{e}");
    let cfg = write_config(&dir, "tiny", "");
    let e = fails(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
        "--gpus",
        "2",
    ]);
    assert!(e.contains("slurm.gpus = 2"), "{e}");
    let e = fails(&["--config", s(&cfg), "--out", s(&out), "--partition", "gpu"]);
    assert!(e.contains("--slurm"), "a Slurm flag without --slurm: {e}");
    let e = fails(&["--out", s(&out), "--cell", "0"]);
    assert!(e.contains("plan.json not found"), "{e}");
    ok(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
    ]);
    let e = fails(&["--out", s(&out), "--cell", "4"]);
    assert!(e.contains("cell 4") && e.contains("cells 0 to 3"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_attempt(dir: &Path) -> Attempt {
    serde_json::from_str(&std::fs::read_to_string(dir.join("attempt.json")).unwrap()).unwrap()
}

fn wait_for_step(child: &mut std::process::Child, metrics: &Path, step: u64) {
    let start = Instant::now();
    loop {
        if let Ok(rows) = metrics::read_rows(metrics) {
            if rows.iter().any(|r| r.step >= step) {
                return;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the cell exited ({status}) before step {step}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step {step} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cells_run_alone_stop_on_sigterm_resume_and_merge_with_the_missing_named() {
    let dir = tmp("cells");
    let cfg = write_config(&dir, "tiny", "");
    let out = dir.join("job");
    ok(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
    ]);

    // Cell 1 (sr seed 1), slowed at its checkpoints so that SIGTERM lands mid-run.
    let cell_dir = out.join("sr/seed-1");
    let mut child = Command::new(BIN)
        .args(["run", "--out", s(&out), "--cell", "1"])
        .env(
            spatial_reasoning::train::checkpoint::SLOW_CHECKPOINT_ENV,
            "150",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &cell_dir.join("metrics.jsonl"), 3);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "an interrupted cell is not a success:\n{log}"
    );
    let a = read_attempt(&cell_dir);
    assert_eq!(a.state, AttemptState::Interrupted, "{a:?}\n{log}");
    let stopped = a.step.unwrap();
    assert!((3..16).contains(&stopped), "{a:?}");
    assert!(cell_dir.join("checkpoints").exists());
    assert!(
        !out.join("results.csv").exists(),
        "cells never write the merged CSV"
    );

    // The merge names the three cells without results and keeps the report.
    let (_, err) = ok(&["--out", s(&out), "--merge"]);
    assert!(err.contains("merged 0 of 4 cells"), "{err}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**4 cell(s) without results**"), "{md}");
    assert!(
        md.contains(&format!(
            "| 1 | sr | 1 | interrupted: stopped by a signal at step {stopped} of 16"
        )),
        "{md}"
    );
    assert!(md.contains("| 0 | rr | 1 | not started |"), "{md}");

    // Run again: it resumes from the checkpoint and finishes; no metrics row twice.
    let (_, err) = ok(&["--out", s(&out), "--cell", "1"]);
    assert!(err.contains("resumed from step"), "{err}");
    assert_eq!(read_attempt(&cell_dir).state, AttemptState::Finished);
    let rows = metrics::read_rows(&cell_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = rows
        .iter()
        .filter(|r| r.kind == metrics::RowKind::Step)
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, (1..=16).collect::<Vec<_>>());
    // A finished cell is not run again.
    let (_, err) = ok(&["--out", s(&out), "--cell", "1"]);
    assert!(err.contains("already evaluated"), "{err}");

    ok(&["--out", s(&out), "--cell", "0"]);
    let (table, err) = ok(&["--out", s(&out), "--merge"]);
    assert!(err.contains("merged 2 of 4 cells"), "{err}");
    assert!(
        table.contains("| rr | 1 |") && table.contains("| sr | 1 |"),
        "{table}"
    );
    let csv = spatial_reasoning::report::read_results_csv(&out.join("results.csv")).unwrap();
    assert_eq!(csv.len(), 4, "two cells × (linear n=0, kNN)");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**2 cell(s) without results**"), "{md}");
    let (status, _) = ok(&["--out", s(&out), "--status"]);
    assert!(
        status.contains("1\tsr\t1\tfinished") && status.contains("2\trr\t2\tnot started"),
        "{status}"
    );
    assert!(status.contains("2 of 4 cells finished"), "{status}");

    // Work exists under the plan: a different configuration is refused, naming the key.
    let e = fails(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
        "--set",
        "train.epochs=3",
    ]);
    assert!(
        e.contains("planned from a different configuration")
            && e.contains("train.epochs: 2 in the plan, 3 now"),
        "{e}"
    );
    let e = fails(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
        "--seeds",
        "1",
    ]);
    assert!(e.contains("seeds: [1, 2] in the plan, [1] now"), "{e}");
    // The same config again plans only the two unfinished cells.
    ok(&[
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--slurm",
        "--dry-run",
    ]);
    let script = std::fs::read_to_string(out.join("slurm/cells.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=2-3\n"), "{script}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `(arm, seed, metric, n) → value` of a results CSV.
fn numbers(csv: &Path) -> Vec<(String, u64, String, usize, f64)> {
    let mut v: Vec<_> = spatial_reasoning::report::read_results_csv(csv)
        .unwrap()
        .into_iter()
        .map(|r| (r.arm, r.seed, r.metric, r.probe_patches, r.value))
        .collect();
    v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    v
}

#[test]
fn reference_arms_run_as_cells_give_the_local_numbers() {
    let dir = tmp("refs");
    let cfg = write_config(&dir, "tiny", "");
    let sets = [
        "--set",
        "run.arms=[\"random-init\", \"supervised\"]",
        "--seeds",
        "3",
    ];
    let (local, cells) = (dir.join("local"), dir.join("cells"));
    let mut args = vec!["--config", s(&cfg), "--out", s(&local)];
    args.extend(sets);
    ok(&args);
    let mut args = vec![
        "--config",
        s(&cfg),
        "--out",
        s(&cells),
        "--slurm",
        "--dry-run",
    ];
    args.extend(sets);
    ok(&args);
    ok(&["--out", s(&cells), "--cell", "0"]);
    ok(&["--out", s(&cells), "--cell", "1"]);
    ok(&["--out", s(&cells), "--merge"]);
    let want = numbers(&local.join("results.csv"));
    assert_eq!(want.len(), 4, "two cells × (linear n=0, kNN)");
    assert_eq!(numbers(&cells.join("results.csv")), want);
    for cell in ["random-init/seed-3", "supervised/seed-3"] {
        assert_eq!(
            std::fs::read_to_string(cells.join(cell).join("config.toml")).unwrap(),
            std::fs::read_to_string(local.join(cell).join("config.toml")).unwrap(),
            "{cell}: the same cell config"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

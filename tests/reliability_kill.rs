//! Kill-and-resume: the release binary is SIGKILLed at several moments of a tiny synthetic run
//! (mid-epoch, before its first checkpoint, in the middle of a checkpoint write, just before a
//! checkpoint's rename) and SIGINTed once, and resumed with `pretrain --out DIR --resume` each
//! time. The stitched run must equal an uninterrupted run with the same seed: the same metrics
//! rows in the same order (loss, loss_relation, loss_distance, relation_acc, skipped; timing
//! columns differ), no duplicates, every complete row written before a kill kept byte for byte,
//! and a bit-identical final `model.safetensors`.
//!
//! The checkpoint-write kills use the test hook `SPATIAL_REASONING_TEST_SLOW_CHECKPOINT=MS`
//! (see `train::checkpoint::SLOW_CHECKPOINT_ENV`): `checkpoint::save` sleeps MS ms after each
//! file it writes, so the test can see `.tmp-step-…/` with some of its files and kill then.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use spatial_reasoning::train::checkpoint::{self, SLOW_CHECKPOINT_ENV};
use spatial_reasoning::train::metrics;

const BIN: &str = env!("CARGO_BIN_EXE_spatial-reasoning");
/// 256 / 32 = 8 steps per epoch, 3 epochs = 24 steps, a checkpoint every 2 steps.
const SETS: [&str; 11] = [
    "data.dataset=synthetic",
    "data.train_size=256",
    "data.test_size=16",
    "backbone.name=conv4",
    "train.batch_size=32",
    "train.epochs=3",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.seed=11",
    "train.threads=2",
    "method.views=2",
];
const TOTAL_STEPS: u64 = 24;
const DEADLINE: Duration = Duration::from_secs(60);

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-rel-kill-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start `pretrain` into `out` (`--resume` without `--set`: the saved config is used, as the
/// CLI's own hint says). stderr goes to `log`.
fn spawn(out: &Path, resume: bool, slow_ms: Option<u64>, log: &Path) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("pretrain").arg("--out").arg(out);
    if resume {
        cmd.arg("--resume");
    } else {
        for s in SETS {
            cmd.args(["--set", s]);
        }
    }
    match slow_ms {
        Some(ms) => cmd.env(SLOW_CHECKPOINT_ENV, ms.to_string()),
        None => cmd.env_remove(SLOW_CHECKPOINT_ENV),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the spatial-reasoning binary")
}

/// Poll until `cond` holds; panics (after killing the child) on exit or timeout.
fn wait_for(child: &mut Child, log: &Path, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            if cond() {
                return;
            }
            panic!(
                "child exited ({status}) before {what}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed child reported success");
}

fn wait_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!(
                "child did not exit in time; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Complete lines of metrics.jsonl, as bytes (a torn last line excluded).
fn complete_lines(out: &Path) -> Vec<u8> {
    let text = std::fs::read(out.join("metrics.jsonl")).unwrap_or_default();
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text[..end].to_vec()
}

fn row_count(out: &Path) -> usize {
    complete_lines(out).iter().filter(|&&b| b == b'\n').count()
}

/// Step rows so far (epoch rows also count as lines, so count kinds explicitly).
fn last_step_row(out: &Path) -> Option<u64> {
    metrics::read_rows(&out.join("metrics.jsonl"))
        .ok()?
        .iter()
        .filter(|r| r.kind == metrics::RowKind::Step)
        .map(|r| r.step)
        .max()
}

/// The comparable part of each row: everything but the timing columns.
fn rows(out: &Path) -> Vec<(String, u64, [u64; 4], u64)> {
    metrics::read_rows(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                format!("{:?}", r.kind),
                r.step,
                [r.loss, r.loss_relation, r.loss_distance, r.relation_acc].map(f64::to_bits),
                r.skipped,
            )
        })
        .collect()
}

/// `.tmp-step-…` directories under checkpoints/ holding `file`.
fn tmp_checkpoint_with(out: &Path, file: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(checkpoint::checkpoints_dir(out)) else {
        return false;
    };
    rd.filter_map(|e| e.ok()).any(|e| {
        e.file_name().to_string_lossy().starts_with(".tmp-step-") && e.path().join(file).exists()
    })
}

fn final_model(out: &Path) -> (u64, Vec<u8>) {
    let (found, problems) = checkpoint::find_latest(out).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    (found.state.step, std::fs::read(found.model_path()).unwrap())
}

/// Kill the child, then check that every complete row it wrote is still there after the
/// resumed process has run a little (rows are appended, never rewritten).
struct Kept(Vec<Vec<u8>>);

impl Kept {
    fn snapshot(&mut self, out: &Path) {
        self.0.push(complete_lines(out));
    }
    fn check(&self, out: &Path) {
        let now = complete_lines(out);
        for (i, before) in self.0.iter().enumerate() {
            assert!(
                now.starts_with(before),
                "rows written before kill #{i} were not kept byte for byte"
            );
        }
    }
}

#[test]
fn sigkill_and_sigint_at_any_moment_then_resume_equals_uninterrupted() {
    let t0 = Instant::now();
    let base = tmp("base");
    let log = base.join("log.txt");

    // Reference: one uninterrupted run.
    let a = base.join("a");
    let mut child = spawn(&a, false, None, &log);
    let status = wait_exit(&mut child, &log);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let rows_a = rows(&a);
    assert_eq!(
        rows_a.iter().filter(|r| r.0 == "Step").count() as u64,
        TOTAL_STEPS,
        "log_every = 1: one step row per step"
    );
    assert_eq!(rows_a.iter().filter(|r| r.0 == "Epoch").count(), 3);
    let t_ref = t0.elapsed();

    let b = base.join("b");
    let mut kept = Kept(Vec::new());

    // 1. Killed before its first checkpoint (as soon as config.toml exists): `--resume` starts
    //    from step 0 instead of refusing.
    let mut child = spawn(&b, false, None, &log);
    wait_for(&mut child, &log, "config.toml", || {
        b.join("config.toml").exists()
    });
    sigkill(&mut child);
    assert!(
        checkpoint::find_latest(&b).is_err(),
        "killed before any checkpoint (the test's premise)"
    );
    kept.snapshot(&b);

    // 2. Killed mid-epoch, after a few rows (some after the newest checkpoint).
    let mut child = spawn(&b, true, None, &log);
    wait_for(&mut child, &log, "5 rows", || row_count(&b) >= 5);
    sigkill(&mut child);
    kept.snapshot(&b);
    kept.check(&b);

    // 3. Killed during a checkpoint write: the weights are in `.tmp-step-…/`, the optimiser
    //    state and state.json are not yet.
    let mut child = spawn(&b, true, Some(400), &log);
    let before = last_step_row(&b).unwrap_or(0);
    wait_for(&mut child, &log, "a half-written checkpoint", || {
        last_step_row(&b).unwrap_or(0) > before && tmp_checkpoint_with(&b, "model.safetensors")
    });
    sigkill(&mut child);
    assert!(
        tmp_checkpoint_with(&b, "model.safetensors"),
        "the kill left a torn checkpoint"
    );
    let (resume_step, _) = final_model(&b);
    kept.snapshot(&b);
    kept.check(&b);

    // 4. Killed after state.json is written but before the rename (the last moment).
    let mut child = spawn(&b, true, Some(400), &log);
    wait_for(&mut child, &log, "a checkpoint about to be renamed", || {
        tmp_checkpoint_with(&b, "state.json")
    });
    sigkill(&mut child);
    let (step, _) = final_model(&b);
    assert!(step >= resume_step);
    kept.snapshot(&b);
    kept.check(&b);

    // 4b. A torn weights file in the newest complete checkpoint (what a crash can leave on a
    //     filesystem that does not order data before the rename): the next resume must skip
    //     that checkpoint (its hash does not match state.json) and use the one before.
    let (torn_step, weights) = final_model(&b);
    let (found, _) = checkpoint::find_latest(&b).unwrap();
    std::fs::write(found.model_path(), &weights[..weights.len() / 2]).unwrap();
    let (fallback, problems) = checkpoint::find_latest(&b).unwrap();
    assert!(
        fallback.state.step < torn_step && problems.len() == 1,
        "{problems:?}"
    );

    // 5. SIGINT: finishes the step, writes a checkpoint at it, exits 130.
    let mut child = spawn(&b, true, None, &log);
    let before = last_step_row(&b).unwrap_or(0);
    wait_for(&mut child, &log, "2 more step rows", || {
        last_step_row(&b).unwrap_or(0) >= before + 2
    });
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child, &log);
    assert_eq!(
        status.code(),
        Some(130),
        "SIGINT exits 130; log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let (ckpt_step, _) = final_model(&b);
    let last_row = last_step_row(&b).unwrap();
    assert_eq!(
        ckpt_step, last_row,
        "SIGINT checkpoints the last completed step"
    );
    assert!(
        ckpt_step < TOTAL_STEPS,
        "interrupted before the end (the test's premise)"
    );
    kept.snapshot(&b);

    // 6. Resume to the end.
    let mut child = spawn(&b, true, None, &log);
    let status = wait_exit(&mut child, &log);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    kept.check(&b);

    let rows_b = rows(&b);
    assert_eq!(
        rows_b, rows_a,
        "stitched metrics equal the uninterrupted run's, no duplicates"
    );
    let (step_a, model_a) = final_model(&a);
    let (step_b, model_b) = final_model(&b);
    assert_eq!((step_a, step_b), (TOTAL_STEPS, TOTAL_STEPS));
    assert!(model_a == model_b, "final model.safetensors bit-identical");
    let leftovers: Vec<_> = std::fs::read_dir(checkpoint::checkpoints_dir(&b))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-step-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "torn temp checkpoints are cleaned up: {leftovers:?}"
    );

    // Where each resumed process started (visible with --nocapture): the first resume found
    // no checkpoint, the four others each resumed from one.
    let log_text = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("resumed from step") || l.contains("no checkpoint yet"))
        .collect();
    assert_eq!(starts.len(), 5, "{log_text}");
    assert!(starts[0].contains("no checkpoint yet"), "{log_text}");
    assert!(
        log_text.contains("skipped a damaged checkpoint") && log_text.contains("model.safetensors"),
        "the torn checkpoint of 4b was reported: {log_text}"
    );
    let _ = writeln!(std::io::stderr(), "{}", starts.join("\n"));
    let _ = writeln!(
        std::io::stderr(),
        "reliability_kill: reference run {:.1}s, whole test {:.1}s",
        t_ref.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&base).unwrap();
}

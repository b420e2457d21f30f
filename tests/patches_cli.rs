//! `spatial-reasoning patches`: JSON lines, geometry errors before any output, PNG drawing on
//! real CIFAR-10.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
}

#[test]
fn json_lines_hold_valid_non_overlapping_patches() {
    let out = bin()
        .args([
            "patches",
            "--image-size",
            "64",
            "--patch-size",
            "24",
            "--count",
            "4",
        ])
        .args(["--samples", "200", "--seed", "3", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 200);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let pos: Vec<(i64, i64)> = v["patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["row"].as_i64().unwrap(), p["col"].as_i64().unwrap()))
            .collect();
        assert_eq!(pos.len(), 4);
        for (i, a) in pos.iter().enumerate() {
            assert!((0..=40).contains(&a.0) && (0..=40).contains(&a.1));
            for b in &pos[i + 1..] {
                assert!((a.0 - b.0).abs() >= 24 || (a.1 - b.1).abs() >= 24, "{line}");
            }
        }
    }
}

#[test]
fn same_seed_same_output() {
    let run = |seed: &str| {
        bin()
            .args([
                "patches",
                "--samples",
                "20",
                "--count",
                "3",
                "--json",
                "--seed",
                seed,
            ])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

#[test]
fn impossible_geometry_fails_before_any_output() {
    let out = bin()
        .args([
            "patches",
            "--image-size",
            "32",
            "--patch-size",
            "20",
            "--count",
            "5",
        ])
        .args(["--samples", "3", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 1 fit"), "{err}");
    // The authors' rule needs no fit, but p ≥ S is still impossible.
    let out = bin()
        .args([
            "patches",
            "--image-size",
            "32",
            "--patch-size",
            "32",
            "--overlap",
            "allowed",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn draws_boxes_on_real_cifar10() {
    let root = PathBuf::from("/work/shared/data");
    if !root.join("cifar-10-batches-bin/test_batch.bin").exists() {
        eprintln!("skipped: no CIFAR-10 under {}", root.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("sr-patches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("patches.png");
    let out = bin()
        .args([
            "patches",
            "--count",
            "3",
            "--samples",
            "4",
            "--mode",
            "additive",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    // 4 rows of (32·4 + 4 gap) + 4; 4 columns (image + 3 patches) of 128 + 5 gaps of 4.
    assert_eq!(img.dimensions(), (4 * 128 + 5 * 4, 4 * 132 + 4));
    // The first patch box is drawn in its colour on the first image.
    let red = img.pixels().filter(|p| p.0 == [230, 25, 75]).count();
    assert!(red > 4 * 12 * 4, "red pixels {red}");
    std::fs::remove_dir_all(&dir).unwrap();
}

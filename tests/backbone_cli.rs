//! `spatial-reasoning info --backbone NAME` prints the SPEC §1 parameter count.

use std::process::Command;

#[test]
fn info_prints_parameter_count() {
    for (name, n) in [
        ("conv4", 24_648),
        ("resnet8", 77_392),
        ("resnet32", 466_256),
        ("resnet56", 855_120),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
            .args(["info", "--backbone", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("params {n}\n")
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
        .args(["info", "--backbone", "resnet9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backbone `resnet9`"));
}

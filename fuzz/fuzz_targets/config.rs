//! The config parser: `Config::from_toml_str`, `apply_overrides` (`--set section.key=value`)
//! and `check`. Properties: never panic; a config that parses survives its own TOML
//! (`to_toml_string` is what a run saves as config.toml); a config that checks is read back
//! from its TOML equal and still valid (`--resume` compares the saved config with the one in
//! force, so a lossy round trip would make a run impossible to resume).
//!
//! Input: UTF-8 (lossy) text; before the first line `%%` is the TOML document, after it one
//! override per line (applied to the parsed document, and to the defaults).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spatial_reasoning::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (doc, sets) = match text.split_once("\n%%\n") {
        Some((d, s)) => (d, s.lines().collect::<Vec<_>>()),
        None => (&*text, Vec::new()),
    };
    if let Ok(cfg) = Config::from_toml_str(doc) {
        let _ = Config::from_toml_str(&cfg.to_toml_string());
        if let Ok(cfg) = cfg.apply_overrides(&sets) {
            if let Ok(valid) = cfg.check() {
                let saved = valid.raw().to_toml_string();
                let back = Config::from_toml_str(&saved).unwrap_or_else(|e| {
                    panic!("a valid config's TOML does not parse: {e}\n{saved}")
                });
                assert!(
                    &back == valid.raw(),
                    "a valid config changes when read back:\n{saved}"
                );
                back.check().expect("read back, it is still valid");
            }
        }
    }
    if let Ok(cfg) = Config::default().apply_overrides(&sets) {
        let _ = cfg.check();
    }
});

//! The scratch folder the file-reader targets write their inputs into: in `/dev/shm` where it
//! exists (no disk writes per input), one per target and process.

use std::path::PathBuf;

/// `<shm or temp>/sr-fuzz-<tag>-<pid>`, created if missing; emptied first when `fresh`.
pub fn scratch(tag: &str, fresh: bool) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("sr-fuzz-{tag}-{}", std::process::id()));
    if fresh {
        let _ = std::fs::remove_dir_all(&d);
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

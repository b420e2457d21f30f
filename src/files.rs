//! Small file helpers every module may use: atomic writes, the file-name slug, CSV fields.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file beside it (`.tmp-<name>`), fsynced, then
/// renamed over `path`, then the directory fsynced (best effort). A reader sees the old file or
/// the new one, never a torn one. Errors name the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| FileError { path: p, source }
    };
    {
        let mut f = File::create(&tmp).map_err(at(&tmp))?;
        f.write_all(bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(at(path))?;
    fsync_dir(dir);
    Ok(())
}

/// Directory fsync is best effort: not every filesystem supports it.
pub fn fsync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file operation that failed, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A name made safe for one path component: ASCII letters, digits, `-` and `.` are kept, every
/// other character becomes `_` (`sr method.patches=3` → `sr_method.patches_3`). Run directories
/// (`OUT/<arm>/seed-<s>/`), feature-cache keys and plot files are named with it.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote, a line
/// break or leading/trailing whitespace (which a reader would otherwise trim); as is otherwise.
pub fn csv_field(field: &str) -> String {
    let needs = field.contains([',', '"', '\n', '\r'])
        || field.starts_with(char::is_whitespace)
        || field.ends_with(char::is_whitespace);
    if needs {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_keeps_dots_and_dashes() {
        assert_eq!(slug("sr method.patches=3"), "sr_method.patches_3");
        assert_eq!(slug("random-init"), "random-init");
        assert_eq!(slug("a/b\\c"), "a_b_c");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(" edge"), "\" edge\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn atomic_write_replaces_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("sr-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(!dir.join(".tmp-x.json").exists());
        let e = write_atomic(&dir.join("missing/y"), b"").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

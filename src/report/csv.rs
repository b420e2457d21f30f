//! The results CSV (RFC 4180 quoting, header row) and `metrics.jsonl` reading.

use std::collections::HashMap;
use std::path::Path;

use super::{MetricRow, ReportError};
use crate::eval::results::CSV_COLUMNS;
use crate::eval::{Protocol, ResultRow};

/// Columns [`read_results_csv`] accepts missing (they read as `None`): the last columns of the
/// evaluation module's [`CSV_COLUMNS`].
const OPTIONAL: [&str; 3] = ["varied_key", "varied_value", "timestamp"];

/// Columns [`read_results_csv`] requires: [`CSV_COLUMNS`] without the trailing [`OPTIONAL`] ones,
/// derived so that a column added to the evaluation module is required here too.
const REQUIRED: &[&str] = CSV_COLUMNS.split_at(CSV_COLUMNS.len() - OPTIONAL.len()).0;

/// Writes `rows` to `path` as a fresh results CSV: the evaluation module's header
/// ([`CSV_COLUMNS`]) and one [`ResultRow::to_csv_line`] per row, the format
/// [`crate::eval::append_csv`] appends to. Creates the parent directory.
pub fn write_results_csv(path: &Path, rows: &[ResultRow]) -> Result<(), ReportError> {
    let mut out = String::new();
    out.push_str(&CSV_COLUMNS.join(","));
    out.push('\n');
    for r in rows {
        let line = r
            .to_csv_line(&CSV_COLUMNS)
            .map_err(|e| ReportError::Input(format!("{}: {e}", path.display())))?;
        out.push_str(&line);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
    }
    std::fs::write(path, out).map_err(|e| ReportError::io(path, e))
}

/// Reads a results CSV (as written by [`crate::eval::append_csv`] or [`write_results_csv`]).
/// Columns are found by name, so their order does not matter; unknown columns are ignored;
/// `varied_key`, `varied_value` and `timestamp` may be missing, and an empty field reads as
/// `None`. RFC 4180 quoting is understood.
///
/// Errors name the file, the line and the column of the first bad field.
pub fn read_results_csv(path: &Path) -> Result<Vec<ResultRow>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let records = parse_csv(&text).map_err(|(line, detail)| ReportError::Parse {
        path: path.to_path_buf(),
        line,
        detail,
    })?;
    let mut records = records.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(ReportError::Parse {
            path: path.to_path_buf(),
            line: 1,
            detail: "empty file: expected a header row".into(),
        });
    };
    let index: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim(), i))
        .collect();
    for &required in REQUIRED {
        if !index.contains_key(required) {
            return Err(ReportError::Parse {
                path: path.to_path_buf(),
                line: 1,
                detail: format!("missing column `{required}` in header {header:?}"),
            });
        }
    }
    let mut rows = Vec::new();
    for (line, rec) in records {
        if rec.len() == 1 && rec[0].trim().is_empty() {
            continue; // blank line
        }
        let err = |detail: String| ReportError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        };
        let get = |name: &str| -> Result<&str, ReportError> {
            match index.get(name) {
                Some(&i) => rec.get(i).map(|s| s.as_str()).ok_or_else(|| {
                    err(format!(
                        "{} fields, but column `{name}` is number {}",
                        rec.len(),
                        i + 1
                    ))
                }),
                None => Ok(""),
            }
        };
        fn num<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            s.trim()
                .parse::<T>()
                .map_err(|e| format!("column `{name}` = {s:?}: {e}"))
        }
        let protocol = get("protocol")?.trim();
        if ![Protocol::Linear, Protocol::Knn]
            .iter()
            .any(|p| p.name() == protocol)
        {
            return Err(err(format!(
                "column `protocol` = {protocol:?}: expected `linear` or `knn`"
            )));
        }
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        rows.push(ResultRow {
            run: get("run")?.to_string(),
            arm: get("arm")?.to_string(),
            seed: num("seed", get("seed")?).map_err(err)?,
            dataset: get("dataset")?.to_string(),
            backbone: get("backbone")?.to_string(),
            protocol: protocol.to_string(),
            metric: get("metric")?.to_string(),
            probe_patches: num("probe_patches", get("probe_patches")?).map_err(err)?,
            value: num("value", get("value")?).map_err(err)?,
            epochs: num("epochs", get("epochs")?).map_err(err)?,
            varied_key: opt(get("varied_key")?),
            varied_value: opt(get("varied_value")?),
            timestamp: opt(get("timestamp")?),
        });
    }
    Ok(rows)
}

/// Reads a run's `metrics.jsonl`, keeping the rows whose `kind` field equals `kind` (rows without a
/// `kind` field are always kept; `kind = None` keeps every row). Blank lines are skipped.
///
/// Errors name the file and line of the first row that is not valid JSON, lacks `step`, or (among
/// the rows kept) has a `kind` other than `step` or `epoch`.
pub fn read_metrics_jsonl(path: &Path, kind: Option<&str>) -> Result<Vec<MetricRow>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: String| ReportError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        if let (Some(want), Some(have)) = (kind, value.get("kind").and_then(|k| k.as_str())) {
            if want != have {
                continue;
            }
        }
        rows.push(serde_json::from_value::<MetricRow>(value).map_err(|e| err(e.to_string()))?);
    }
    Ok(rows)
}

/// One CSV record: the 1-based line where it starts, and its fields.
type Record = (usize, Vec<String>);

/// Splits CSV text into records of fields, each with the 1-based line where it starts.
/// Quoted fields may hold commas, doubled quotes and line breaks. `\r\n` ends a record like `\n`.
fn parse_csv(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut quote_line = 0;
    let mut any = false; // anything read in the current record
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                in_quotes = true;
                quote_line = line;
                any = true;
            }
            '"' => {
                return Err((
                    line,
                    format!("quote inside an unquoted field after {field:?}"),
                ))
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start_line, std::mem::take(&mut fields)));
                line += 1;
                start_line = line;
                any = false;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if in_quotes {
        return Err((quote_line, "quoted field is never closed".into()));
    }
    if any {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_handles_quotes_commas_newlines_and_crlf() {
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n1,,3";
        let recs = parse_csv(text).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0], (1, vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(
            recs[1],
            (
                2,
                vec!["x, y".into(), "say \"hi\"".into(), "two\nlines".into()]
            )
        );
        assert_eq!(recs[2], (4, vec!["1".into(), "".into(), "3".into()]));
    }

    #[test]
    fn parse_reports_unclosed_quote_with_its_line() {
        assert_eq!(
            parse_csv("a\n\"open,b\nc").unwrap_err().0,
            2,
            "the error names the line where the quote opened"
        );
        assert!(parse_csv("ab\"c").is_err());
    }

    #[test]
    fn quote_round_trips_through_parse() {
        for s in ["plain", "a,b", "q\"q", " lead", "multi\nline", ""] {
            let recs = parse_csv(&format!("{},end\n", crate::files::csv_field(s))).unwrap();
            assert_eq!(recs[0].1, vec![s.to_string(), "end".to_string()]);
        }
    }

    #[test]
    fn csv_columns_are_required_then_optional() {
        assert_eq!([REQUIRED, &OPTIONAL].concat(), CSV_COLUMNS);
    }

    /// Dropping any one column of [`CSV_COLUMNS`] from the header: a required column is an error
    /// naming it, an optional one reads as `None`.
    #[test]
    fn each_required_column_is_checked_and_optional_ones_may_be_missing() {
        let dir = std::env::temp_dir().join(format!("sr-csv-cols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.csv");
        let value = |c: &'static str| match c {
            "seed" | "probe_patches" => "1",
            "protocol" => "linear",
            "value" => "0.5",
            "epochs" => "10",
            "timestamp" => "2026-01-01T00:00:00Z",
            other => other,
        };
        for drop in CSV_COLUMNS {
            let cols: Vec<&str> = CSV_COLUMNS.into_iter().filter(|&c| c != drop).collect();
            let vals: Vec<&str> = cols.iter().map(|&c| value(c)).collect();
            std::fs::write(&path, format!("{}\n{}\n", cols.join(","), vals.join(","))).unwrap();
            let got = read_results_csv(&path);
            if OPTIONAL.contains(&drop) {
                let rows = got.unwrap_or_else(|e| panic!("without `{drop}`: {e}"));
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].value, 0.5);
            } else {
                let e = got.expect_err(drop).to_string();
                assert!(e.contains(&format!("missing column `{drop}`")), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! A cell's results on disk: `RUN/eval/linear_n<n>.json` and `RUN/eval/knn.json` (atomic
//! writes), appended to the job's `results.csv`, and read back so a restarted job skips cells
//! whose every result is there.

use std::path::Path;

use super::job::Cell;
use super::{file_err, JobError};
use crate::config::ValidConfig;
use crate::eval::{self, EvalPlan, EvalResult, ResultRow};

/// File name of a result in `RUN/eval/`.
pub fn result_file_name(r: &EvalResult) -> String {
    match r.protocol {
        eval::Protocol::Linear => format!("linear_n{}.json", r.probe_patches),
        eval::Protocol::Knn => "knn.json".into(),
    }
}

/// Write results to `run_dir/eval/*.json` (atomically) and append them to `csv`.
pub fn save_results(
    run_dir: &Path,
    csv: Option<&Path>,
    arm: &str,
    cfg: &ValidConfig,
    results: &[EvalResult],
) -> Result<Vec<ResultRow>, JobError> {
    let dir = run_dir.join("eval");
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let mut rows = Vec::new();
    for r in results {
        let path = dir.join(result_file_name(r));
        crate::files::write_atomic(&path, &serde_json::to_vec_pretty(r).expect("serialises"))
            .map_err(|e| file_err(&path, e))?;
        let row = ResultRow::new(
            &run_dir.display().to_string(),
            arm,
            cfg.train.seed,
            cfg.data.dataset.name(),
            cfg.backbone.name.name(),
            r,
        );
        if let Some(csv) = csv {
            eval::append_csv(csv, &row)?;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Read results already written to `run_dir/eval/` (so a restarted job skips finished runs),
/// each with the time its file was written.
fn existing_results(
    run_dir: &Path,
    plan: &EvalPlan,
) -> Option<Vec<(EvalResult, std::time::SystemTime)>> {
    let mut names: Vec<String> = plan
        .linear_patches()
        .iter()
        .map(|n| format!("linear_n{n}.json"))
        .collect();
    if plan.knn.is_some() {
        names.push("knn.json".into());
    }
    names
        .iter()
        .map(|n| {
            let path = run_dir.join("eval").join(n);
            let text = std::fs::read_to_string(&path).ok()?;
            let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((serde_json::from_str(&text).ok()?, written))
        })
        .collect()
}

/// The rows of a cell whose every probe result is in its `eval/` (`None` while any is missing),
/// stamped with the time each result file was written. Nothing is run.
pub fn finished_rows(
    job: &ValidConfig,
    cell: &Cell,
    out: &Path,
) -> Result<Option<Vec<ResultRow>>, JobError> {
    let cell_cfg = cell.config(job)?;
    let dir = cell.run_dir(out);
    let Some(done) = existing_results(&dir, &cell.eval_plan(&cell_cfg)) else {
        return Ok(None);
    };
    Ok(Some(
        done.iter()
            .map(|(r, written)| {
                let mut row = ResultRow::new(
                    &dir.display().to_string(),
                    &cell.arm.name,
                    cell.seed,
                    cell_cfg.data.dataset.name(),
                    cell_cfg.backbone.name.name(),
                    r,
                );
                let secs = written
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                row.timestamp = Some(eval::results::rfc3339_utc(secs));
                row
            })
            .collect(),
    ))
}

"""Execute notebooks headlessly with the Rust (evcxr) kernel and check every cell.

    python run_notebooks.py OUT_DIR NOTEBOOK.ipynb [...]

A notebook whose metadata holds `spatial_reasoning.ci_recompute` (Rust code, e.g. `let recompute =
Some(…);`) runs a second time with that code injected as a cell right after its cell tagged
`parameters` — the path that recomputes its results at a tiny budget — and that run's executed
copy is written as `NAME-recompute.ipynb`.

Runs each notebook with the working directory set to its own folder (so `:dep … { path = ".." }`
and relative paths resolve as they do in Jupyter), writes the executed copy (outputs and plots
included) to OUT_DIR, and counts a notebook as failed when a cell raises (compile error, panic
with `:preserve_vars_on_panic 0`), emits an `error` output, or writes anything to stderr: evcxr
reports a cell whose `?` returns an error as *successful* and only prints the error's message to
stderr, and the crate itself never prints, so the notebooks keep stderr for errors. Prints one
line per notebook and `N passed, N failed`; exits 1 on any failure.
"""

import os
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

# evcxr prints compile errors as "error[E0308]: …" / "error: …" lines; panics as "panicked at".
BAD_STREAM = re.compile(r"(^error(\[E\d+\])?:|panicked at|^Error: )", re.MULTILINE)
TIMEOUT_PER_CELL = int(os.environ.get("NOTEBOOK_CELL_TIMEOUT", "1800"))


def problems(nb):
    """Error outputs and suspicious stream text, as (cell index, text)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append((i, f"{out.get('ename', '')}: {out.get('evalue', '')}".strip()))
            elif out.output_type == "stream" and (
                out.get("name") == "stderr" or BAD_STREAM.search(out.get("text", ""))
            ):
                text = out.get("text", "").strip()
                if text:
                    found.append((i, text[:2000]))
    return found


def inject(nb, code):
    """Insert `code` as a new cell after the cell tagged `parameters` (papermill's convention)."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            nb.cells.insert(i + 1, nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]}))
            return nb
    raise ValueError("no cell tagged `parameters` to inject after")


def run(path, out_dir, code=None, suffix=""):
    nb = nbformat.read(path, as_version=4)
    if code is not None:
        nb = inject(nb, code)
    client = NotebookClient(
        nb,
        kernel_name="rust",
        timeout=TIMEOUT_PER_CELL,
        startup_timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
    )
    started = time.time()
    error = None
    try:
        client.execute()
    except (CellExecutionError, DeadKernelError, TimeoutError, RuntimeError) as e:
        error = str(e).strip().splitlines()[-1:] or [type(e).__name__]
        error = error[0]
    seconds = time.time() - started
    os.makedirs(out_dir, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    nbformat.write(nb, os.path.join(out_dir, base + suffix + ext))
    found = problems(nb)
    if error and not found:
        found.append((-1, error))
    return seconds, found


def main():
    out_dir, paths = sys.argv[1], sys.argv[2:]
    passed = failed = 0
    runs = []
    for path in paths:
        runs.append((path, None, ""))
        meta = nbformat.read(path, as_version=4).metadata.get("spatial_reasoning", {})
        if "ci_recompute" in meta:
            runs.append((path, meta["ci_recompute"], "-recompute"))
    for path, code, suffix in runs:
        seconds, found = run(path, out_dir, code, suffix)
        name = os.path.basename(path) + (" (recompute)" if code is not None else "")
        if found:
            failed += 1
            print(f"FAIL {name} ({seconds:.0f} s)")
            for cell, text in found:
                print(f"  cell {cell}: {text}")
        else:
            passed += 1
            print(f"ok   {name} ({seconds:.0f} s)")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Helpers of scripts/gpu-check.sh (kept out of the shell script so they can be tested anywhere).

    gpu_report.py tag TAG JSON                 one JSON object with "tag" added (or nothing)
    gpu_report.py pair OURS_JSON TORCH_JSON    one comparison line: images/s, peak memory, ratio
    gpu_report.py profiles JSON...             the per-op tables of profiled runs
    gpu_report.py pretrain GPU_METRICS CPU_METRICS   SR pretraining losses: GPU against CPU
    gpu_report.py record RECORDS.jsonl COMMIT_FILE GPU VERSIONS_JSON DEST FAILURES SECONDS
                                               the run's JSON record (benches/results/)
"""
import datetime
import json
import math
import statistics
import sys


def load(s):
    try:
        return json.loads(s) if s and s.strip() else {}
    except json.JSONDecodeError:
        return {}


def num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "n/a"


def ratio(o, t):
    a, b = o.get("img_per_s"), t.get("img_per_s")
    return a / b if a and b else None


def cmd_tag(tag, js):
    d = load(js)
    if d:
        d["tag"] = tag
        print(json.dumps(d))


def cmd_pair(ours, torch):
    o, t = load(ours), load(torch)
    what = f"{o.get('backbone', t.get('backbone', '?'))} {o.get('bench', t.get('bench', 'train'))} " \
           f"batch {o.get('batch', t.get('batch', '?'))} {o.get('math', '?')}"
    print(f"{what:<34} ours {num(o.get('img_per_s'), '9.1f')} img/s ({num(o.get('peak_gpu_mib'), '6.0f')} MiB), "
          f"torch {num(t.get('img_per_s'), '9.1f')} img/s ({num(t.get('peak_gpu_mib'), '6.0f')} MiB), "
          f"ours/torch {num(ratio(o, t), '.3f')}"
          + (f", data wait {100 * o['data_wait']:.1f} %" if isinstance(o.get("data_wait"), float) else ""))


def cmd_profiles(*runs):
    for js in runs:
        d = load(js)
        if not d:
            continue
        print(f"{d.get('impl')} {d.get('bench', 'train')} {d.get('backbone')} batch {d.get('batch')}: "
              f"{num(d.get('img_per_s'), '.1f')} img/s")
        for r in (d.get("profile") or [])[:16]:
            print(f"  {str(r.get('op'))[:64]:<64} {num(r.get('ms_per_step'), '8.3f')} ms/step "
                  f"{num(r.get('calls_per_step'), '6.1f')}/step")


def steps(path):
    try:
        return {r["step"]: r for r in map(json.loads, open(path)) if r.get("kind") == "step"}
    except OSError:
        return {}


def cmd_pretrain(gpu_metrics, cpu_metrics, want_steps="50"):
    g, c = steps(gpu_metrics), steps(cpu_metrics)
    res = {"gpu_steps": len(g), "ok": False}
    if len(g) >= 2 and len(c) >= 2:
        res["finite"] = all(math.isfinite(r["loss"]) for r in g.values())
        res["ok"] = len(g) == int(want_steps) and res["finite"]
        for s, tol in ((1, 1e-5), (2, 1e-3)):
            d = abs(g[s]["loss"] - c[s]["loss"])
            res[f"step{s}"] = {"gpu": g[s]["loss"], "cpu": c[s]["loss"], "diff": d, "tolerance": tol}
            res["ok"] = res["ok"] and d <= tol
        later = [g[s] for s in g if s > 5]
        res["gpu_img_per_s"] = statistics.median(r["img_per_s"] for r in later) if later else None
        res["gpu_data_wait"] = statistics.median(r["data_wait"] for r in later) if later else None
        res["cpu_img_per_s"] = c[2]["img_per_s"]
        res["loss_first_last"] = [g[min(g)]["loss"], g[max(g)]["loss"]]
    print(json.dumps(res))


def cmd_record(records, commit_file, gpu, versions, dest, failures, seconds):
    rows = [json.loads(line) for line in open(records) if line.strip()]
    try:
        commit = open(commit_file).read().split()
    except OSError:
        commit = []

    def pick(tag, **match):
        for r in rows:
            if r.get("tag") == tag and all(r.get(k) == v for k, v in match.items()):
                return r
        return {}

    table = []
    for bb in ("resnet32", "conv4"):
        for b in (128, 512):
            for m in ("fp32", "tf32"):
                o = pick("train ours", backbone=bb, batch=b, math=m)
                t = pick("train torch", backbone=bb, batch=b, math=m)
                table.append({
                    "setting": "train", "backbone": bb, "batch": b, "math": m,
                    "torch_math": "PyTorch defaults (TF32 convolutions)" if m == "tf32" else "TF32 off",
                    "ours_img_per_s": o.get("img_per_s"), "torch_img_per_s": t.get("img_per_s"),
                    "ratio": ratio(o, t),
                    "ours_peak_gpu_mib": o.get("peak_gpu_mib"), "torch_peak_gpu_mib": t.get("peak_gpu_mib")})
    for m in ("fp32", "tf32"):
        o = pick("sr ours", math=m)
        t = pick("sr torch", math=m)
        table.append({
            "setting": "sr-pretrain B128 K4 P3 p24 64x64 (source images/s)", "backbone": "resnet32",
            "batch": 128, "math": m,
            "ours_img_per_s": o.get("img_per_s"), "torch_img_per_s": t.get("img_per_s"), "ratio": ratio(o, t),
            "ours_peak_gpu_mib": o.get("peak_gpu_mib"), "torch_peak_gpu_mib": t.get("peak_gpu_mib"),
            "ours_data_wait": o.get("data_wait")})
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit[0] if commit else None, "tree": commit[1] if len(commit) > 1 else None,
        "gpu": gpu, "versions": load(versions), "failures": int(failures), "seconds": int(seconds),
        "rows": table,
        "correctness": {"cuda_ops": pick("cuda_ops"), "pretrain": pick("pretrain_check")},
        "profiles": {r["tag"]: {"img_per_s": r.get("img_per_s"), "ops": r.get("profile")}
                     for r in rows if r.get("tag", "").startswith("profile")},
        "runs": rows,
    }
    with open(dest, "w") as f:
        json.dump(out, f, indent=1)
    for r in table:
        print(f"{r['setting'][:32]:<32} {r['backbone']:<8} {r['batch']:>3} {r['math']}: "
              f"ours {num(r['ours_img_per_s'], '9.1f')}  torch {num(r['torch_img_per_s'], '9.1f')}  "
              f"ratio {num(r['ratio'], '.3f')}  "
              f"MiB {num(r['ours_peak_gpu_mib'], '.0f')}/{num(r['torch_peak_gpu_mib'], '.0f')}")
    print("record:", dest)


if __name__ == "__main__":
    cmd = {"tag": cmd_tag, "pair": cmd_pair, "profiles": cmd_profiles, "pretrain": cmd_pretrain,
           "record": cmd_record}[sys.argv[1]]
    cmd(*sys.argv[2:])

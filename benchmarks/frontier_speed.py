"""The 100-point frontier before and after sharing the presolve's work across budgets, same run, interleaved.

    .venv/bin/python benchmarks/frontier_speed.py [--backends dp,cpsat,milp]
        [--specs mdp-rn101-step00,...] [--points 100] [--old-sample 10]

For every spec and backend, in this order, each in a fresh process: the old path (`frontier(...,
share=False)`: dp's one pass where it applies, else one independent `solve()` per budget), the new path
(`frontier(...)`: one `SharedPresolve` across the budgets; with `--main PYTHON` the old path is that
interpreter's mdp_opt as it is, e.g. `--main /work/main/.venv/bin/python` for the main branch), interleaved new, old, new, old (the two timings
of each are the noise floor of this shared machine; the verdict and the speed-up use the slower new one and
the faster old one). On specs with more than 2,000 choices the old path is timed on every
`--old-sample`-th budget of the grid and scaled up (marked "~"): 100 independent solves there take minutes.
Every point of the new path is checked against the old path's answer at the same budget (status and
objective within 1e-9, relative) wherever the old path ran; a mismatch is printed and fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

REAL = ["mdp-mbv1-2nd-step00", "mdp-rn101-step00", "mdp-rn50-step10", "mdp-rn50-step20"]
GENERATED = {"resnet 3-8-72-3 x64": ("resnet50", {"blocks": [3, 8, 72, 3], "choices": 64})}


def make(label: str):
    import mdp_opt
    example, sizes = GENERATED.get(label, (label, {}))
    return mdp_opt.examples.make(example, **{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})


def child(job: dict[str, Any]) -> dict[str, Any]:
    import mdp_opt
    spec = make(job["spec"])
    options = {"threads": 2} if mdp_opt.get_backend(job["backend"]).has(mdp_opt.Feature.THREADS) else {}
    budgets = job.get("budgets")
    start = time.perf_counter()
    if "share" in job:                 # the baseline (--main) predates the option
        options["share"] = job["share"]
    points = mdp_opt.frontier(spec, "latency", budgets=budgets, points=job["points"], backend=job["backend"],
                              **options)
    seconds = time.perf_counter() - start
    shared = points[-1].result.stats.get("shared_presolve", {}) if points else {}
    return {"seconds": seconds, "dims": len(spec.dims), "choices": sum(d.size for d in spec.dims),
            "budgets": [p.budget for p in points], "objectives": [p.objective for p in points],
            "statuses": [p.status.value for p in points], "how": points[0].result.stats.get("frontier"),
            "proven": sum(p.status is mdp_opt.Status.OPTIMAL for p in points), "shared": shared}


def run(job: dict[str, Any], timeout: float, python: str = sys.executable) -> dict[str, Any]:
    try:
        done = subprocess.run([python, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONHASHSEED="0"), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _progress(label: str, backend: str, which: str, r: dict[str, Any]) -> None:
    print(f"<!-- {label} {backend} {which}: {r.get('seconds', r.get('error'))} -->", file=sys.stderr, flush=True)


def mismatches(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Budgets where the old path's answer differs from the new path's at the same budget."""
    at = {round(b, 9): (s, v) for b, s, v in zip(new["budgets"], new["statuses"], new["objectives"])}
    bad = []
    for b, s, v in zip(old["budgets"], old["statuses"], old["objectives"]):
        s_new, v_new = at[round(b, 9)]
        same_value = (v is None and v_new is None) or (
            v is not None and v_new is not None and abs(v - v_new) <= 1e-9 * max(1.0, abs(v)))
        if s != s_new or not same_value:
            bad.append(f"budget {b:.6g}: old {s} {v}, new {s_new} {v_new}")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="dp,cpsat,milp")
    parser.add_argument("--specs", default=",".join(REAL + list(GENERATED)))
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--old-sample", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--once", action="store_true", help="new once and old once (for the slow specs)")
    parser.add_argument("--main", metavar="PYTHON",
                        help="the old path is this interpreter's mdp_opt (e.g. the main checkout's venv), as it is")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    print(f"### {args.points}-point latency frontier: old path (twice) and new path, seconds\n")
    print("| spec | dims / choices | backend | old | old again | new | new again | speed-up | proven (new) | "
          "new path | passes run / reused | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for label in args.specs.split(","):
        for backend in args.backends.split(","):
            base = {"spec": label, "backend": backend, "points": args.points}
            news = [run({**base, "share": True}, args.timeout)]
            old_job = dict(base) if args.main else {**base, "share": False}
            old_python = args.main or sys.executable
            scale = 1.0
            first = news[0]
            if "error" not in first and first["choices"] > 2000 and first["how"] != "one pass for every budget":
                sample = first["budgets"][::args.old_sample]
                old_job["budgets"], scale = sample, len(first["budgets"]) / len(sample)
            _progress(label, backend, "new", news[-1])
            olds = [run(old_job, args.timeout, old_python)]          # new, old, new, old: interleaved
            _progress(label, backend, "old", olds[-1])
            if args.once:
                news.append(news[0])
                olds.append(olds[0])
            else:
                news.append(run({**base, "share": True}, args.timeout))
                _progress(label, backend, "new", news[-1])
                olds.append(run(old_job, args.timeout, old_python))
                _progress(label, backend, "old", olds[-1])
            new = min((n for n in news if "error" not in n), key=lambda n: n["seconds"], default=news[0])
            limit = 5.0 if label.startswith("mdp-") else 30.0
            if "error" in new:
                print(f"| {label} | | {backend} | | | error: {new['error']} | | | | | | NOT met |", flush=True)
                ok = False
                continue
            bad = [m for old in olds if "error" not in old for m in mismatches(new, old)]
            bad += [m for n in news if "error" not in n and n is not new for m in mismatches(new, n)]
            slowest = max(n["seconds"] for n in news if "error" not in n)
            met = slowest <= limit and new["proven"] == len(new["budgets"]) and not bad
            ok &= met

            def old_cell(old: dict[str, Any]) -> str:
                if "error" in old:
                    return f"error: {old['error']}"
                return ("~" if scale != 1.0 else "") + f"{old['seconds'] * scale:.2f}"
            times = [o["seconds"] * scale for o in olds if "error" not in o]
            speed = f"{min(times) / slowest:.1f}x" if times else ""

            def new_cell(n: dict[str, Any]) -> str:
                return f"error: {n['error']}" if "error" in n else f"{n['seconds']:.2f}"
            shared = new["shared"]
            print(f"| {label} | {new['dims']} / {new['choices']:,} | {backend} | {old_cell(olds[0])} | "
                  f"{old_cell(olds[1])} | {new_cell(news[0])} | {new_cell(news[1])} | {speed} | {new['proven']} of {len(new['budgets'])} | "
                  f"{'one pass' if new['how'] == 'one pass for every budget' else 'shared presolve'} | "
                  f"{shared.get('passes_run', '')} / {shared.get('passes_reused', '')} | "
                  f"<= {limit:g} s: {'met' if met else 'NOT met'} |", flush=True)
            for m in bad:
                print(f"  MISMATCH {label} {backend}: {m}", flush=True)
    print(f"\ntarget {'met' if ok else 'NOT met'} ({os.cpu_count()} CPUs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Issue 18's targets, measured: every exact backend side by side, one table per target, a verdict per target.

    .venv/bin/python benchmarks/scale.py [--targets single,multi,frontier,hard,limits]
        [--backends cpsat,milp,dp] [--repeats 1] [--hard-seeds 20] [--hard-first-seed 0] [--workers 1] [--quick]

The single, multi and hard targets also check that the backends agree: a verified value above another
backend's proven bound (two different proven optima, say) is printed as a DISAGREEMENT and fails the target.
Every solve runs in a fresh process (so that its peak memory, the `ru_maxrss` of that process, spec
included, is its own), with the presolve on, 2 threads for the backends that take them and a time limit
(120 s; 60 s for the hard family). Rows print as they finish; the median over `--repeats` is shown.
Targets:

- single: one resource (latency 50%), 592 to ~42,000 choices: proven optimal in <= 1 s up to 10,000
  choices and <= 5 s up to 50,000, peak memory < 1 GiB;
- multi: two and three resources (latency, params, flops at 50%) on ResNet-50/101/152 and ViT-B/L shapes:
  proven optimal in <= 2 s; the presolve's relative gap (bound - incumbent) / bound beside the
  single-resource one;
- frontier: 100 points of the latency frontier (dp's one pass, else one solve per budget; `--workers N`: in N
  processes) in <= 5 s on the real instances and <= 30 s on a 10,000-choice spec, every point proven optimal;
- hard: `examples.make("hard", seed)` for 20 seeds: proven optimal within 60 s on all, median <= 1 s
  (`--hard-first-seed 20 --hard-seeds 30`: the next 30, beyond the target);
- limits: every backend on ResNet-152 with three resources, time_limit=2: the overrun.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

SINGLE = [  # label, example, sizes, choices-target (s)
    ("resnet50", "resnet50", {}),
    ("resnet152", "resnet152", {}),
    ("vit-l x32", "vit-l", {"choices": 32}),
    ("resnet152 x64", "resnet152", {"choices": 64}),
    ("vit-h x64", "vit-h", {"choices": 64}),
    ("vit-h x128", "vit-h", {"choices": 128}),
    ("resnet 3-8-72-3 x64", "resnet50", {"blocks": [3, 8, 72, 3], "choices": 64}),
    ("resnet152 x128", "resnet152", {"choices": 128}),
    ("resnet 3-8-72-3 x256", "resnet50", {"blocks": [3, 8, 72, 3], "choices": 256}),
]
MULTI_SHAPES = [("resnet50", "resnet50"), ("resnet101", "resnet101"), ("resnet152", "resnet152"),
                ("vit-b", "vit12"), ("vit-l", "vit-l")]
FRONTIER = [("mdp-mbv1-2nd-step00", "mdp-mbv1-2nd-step00", {}), ("mdp-rn101-step00", "mdp-rn101-step00", {}),
            ("mdp-rn50-step10", "mdp-rn50-step10", {}), ("mdp-rn50-step20", "mdp-rn50-step20", {}),
            ("resnet 3-8-72-3 x64", "resnet50", {"blocks": [3, 8, 72, 3], "choices": 64})]


# ---- one measurement, in a child process -----------------------------------------------------------

def child(job: dict[str, Any]) -> dict[str, Any]:
    import mdp_opt
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in job["sizes"].items()}
    spec = mdp_opt.examples.make(job["example"], seed=job.get("seed", 0), **sizes)
    out: dict[str, Any] = {"dims": len(spec.dims), "choices": sum(d.size for d in spec.dims)}
    backend = job["backend"]
    options = {"threads": 2} if mdp_opt.get_backend(backend).has(mdp_opt.Feature.THREADS) else {}
    start = time.perf_counter()
    if job["kind"] == "frontier":
        points = mdp_opt.frontier(spec, resource="latency", points=100, backend=backend,
                                  workers=job.get("workers", 1), **options)
        out.update(seconds=time.perf_counter() - start, points=len(points),
                   proven=sum(p.status is mdp_opt.Status.OPTIMAL for p in points),
                   how=points[0].result.stats.get("frontier") if points else None)
    else:
        result = mdp_opt.solve(spec, job.get("budget"), backend=backend, time_limit=job["time_limit"], **options)
        pre = result.stats.get("presolve", {})
        gap = None
        if pre.get("bound") is not None and pre.get("incumbent") is not None:
            gap = (pre["bound"] - pre["incumbent"]) / max(1.0, abs(pre["bound"]))
        out.update(seconds=time.perf_counter() - start, status=result.status.value, objective=result.objective,
                   bound=result.bound, presolve_seconds=pre.get("time"), presolve_gap=gap,
                   kept=pre.get("choices_kept"), solved_by=result.stats.get("solved_by"))
    # the largest process: this one or a frontier's worker
    out["peak_mib"] = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)) / 1024
    return out


def measure(job: dict[str, Any], repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        env = dict(os.environ, PYTHONHASHSEED="0")
        try:
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                                  text=True, env=env, timeout=job.get("time_limit", 600) * 3 + 300)
        except subprocess.TimeoutExpired as e:
            return {"error": f"did not finish within {e.timeout:.0f} s"}
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:120]}
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = dict(runs[-1])
    best["seconds"] = statistics.median(r["seconds"] for r in runs)
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    return best


# ---- targets -----------------------------------------------------------------------------------------

def disagreement(label: str, rows: dict[str, dict[str, Any]]) -> bool:
    """Print and return True when a backend's verified value lies above another's proven bound (two different
    proven optima, for one), as `mdp_opt.bench` judges it: the product promises that this cannot happen."""
    from mdp_opt.bench import BenchRow, compare
    found = compare([BenchRow(label, b, r["status"], r.get("objective"), r.get("bound"))
                     for b, r in rows.items() if "error" not in r])[1]
    for line in found:
        print(f"\n**DISAGREEMENT** {line}\n", flush=True)
    return bool(found)


def agreement_line(disagreements: int, rows: int) -> None:
    print(f"\n- proven optima of the backends agree on {rows - disagreements} of {rows} rows"
          + ("" if not disagreements else ": NOT met (exactness)"))


def cell(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    status = r.get("status", "")
    return f"{r['seconds']:.2f} {status if status != 'optimal' else 'opt'}"


def single(args) -> bool:
    print("\n### Single resource (latency 50%)\n")
    print("| spec | dims / choices | " + " | ".join(args.backends) + " | presolve s | presolve gap | kept | peak MiB | target |")
    print("|---|---|" + "---|" * len(args.backends) + "---|---|---|---|---|")
    ok, disagreements, specs = True, 0, SINGLE if not args.quick else SINGLE[:4]
    for label, example, sizes in specs:
        rows = {b: measure({"kind": "solve", "example": example, "sizes": sizes, "backend": b,
                            "time_limit": args.time_limit}, args.repeats) for b in args.backends}
        first = next((r for r in rows.values() if "error" not in r), {})
        choices = first.get("choices", 0)
        limit = 1.0 if choices <= 10_000 else 5.0
        met = all("error" not in r and r["status"] == "optimal" and r["seconds"] <= limit and r["peak_mib"] < 1024
                  for r in rows.values())
        disagreements += disagreement(label, rows)
        ok &= met
        print(f"| {label} | {first.get('dims')} / {choices:,} | " + " | ".join(cell(rows[b]) for b in args.backends)
              + f" | {_num(first.get('presolve_seconds'))} | {_gap(first.get('presolve_gap'))} | {first.get('kept')} | "
              f"{max(r.get('peak_mib', 0) for r in rows.values()):.0f} | <= {limit:g} s: {'met' if met else 'NOT met'} |",
              flush=True)
    agreement_line(disagreements, len(specs))
    return ok and not disagreements


def multi(args) -> bool:
    print("\n### Two and three resources (latency, params, flops at 50%)\n")
    print("| spec | resources | " + " | ".join(args.backends) + " | presolve gap | single-resource gap | target |")
    print("|---|---|" + "---|" * len(args.backends) + "---|---|---|")
    ok, disagreements = True, 0
    shapes = MULTI_SHAPES if not args.quick else MULTI_SHAPES[:2]
    for label, example in shapes:
        base = measure({"kind": "solve", "example": example, "sizes": {}, "backend": args.backends[0],
                        "time_limit": args.time_limit}, 1)
        for extra in (["params"], ["params", "flops"]):
            sizes = {r: True for r in extra}
            budget = {r: "50%" for r in ["latency", *extra]}
            rows = {b: measure({"kind": "solve", "example": example, "sizes": sizes, "backend": b, "budget": budget,
                                "time_limit": args.time_limit}, args.repeats) for b in args.backends}
            first = next((r for r in rows.values() if "error" not in r), {})
            met = all("error" not in r and r["status"] == "optimal" and r["seconds"] <= 2.0 for r in rows.values())
            disagreements += disagreement(f"{label} with {1 + len(extra)} resources", rows)
            ok &= met
            print(f"| {label} | {1 + len(extra)} | " + " | ".join(cell(rows[b]) for b in args.backends)
                  + f" | {_gap(first.get('presolve_gap'))} | {_gap(base.get('presolve_gap'))} | "
                  f"<= 2 s: {'met' if met else 'NOT met'} |", flush=True)
    agreement_line(disagreements, 2 * len(shapes))
    return ok and not disagreements


def frontier(args) -> bool:
    print("\n### 100-point latency frontier (backend dp)\n")
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    print("| spec | dims / choices | seconds | points proven optimal | how | target |")
    print("|---|---|---|---|---|---|")
    ok = True
    for label, example, sizes in FRONTIER if not args.quick else FRONTIER[:1]:
        r = measure({"kind": "frontier", "example": example, "sizes": sizes, "backend": "dp",
                     "time_limit": args.time_limit, "workers": args.workers}, args.repeats)
        limit = 5.0 if example.startswith("mdp-") else 30.0
        met = "error" not in r and r["seconds"] <= limit and r["proven"] == r["points"]
        ok &= met
        if "error" in r:
            print(f"| {label} | | error: {r['error']} | | | NOT met |", flush=True)
            continue
        print(f"| {label} | {r['dims']} / {r['choices']:,} | {r['seconds']:.2f} | {r['proven']} of {r['points']} | "
              f"{r['how']}{workers if r['how'] != 'one pass for every budget' else ''} | <= {limit:g} s: {'met' if met else 'NOT met'} |", flush=True)
    return ok


def hard(args) -> bool:
    seeds = range(args.hard_first_seed, args.hard_first_seed + args.hard_seeds)
    print(f"\n### Hard family: examples.make('hard', seed) for seeds {seeds.start}-{seeds.stop - 1}, time limit 60 s\n")
    print("| seed | shape | resources | dims / choices | " + " | ".join(args.backends) + " | presolve gap |")
    print("|---|---|---|---|" + "---|" * len(args.backends) + "---|")
    times: dict[str, list[float]] = {b: [] for b in args.backends}
    proven = {b: 0 for b in args.backends}
    disagreements = 0
    for seed in seeds:
        rows = {b: measure({"kind": "solve", "example": "hard", "seed": seed, "sizes": {}, "backend": b,
                            "time_limit": 60.0}, args.repeats) for b in args.backends}
        first = next((r for r in rows.values() if "error" not in r), {})
        disagreements += disagreement(f"hard seed {seed}", rows)
        for b, r in rows.items():
            if "error" not in r:
                times[b].append(r["seconds"])
                proven[b] += r["status"] == "optimal"
        shape = "ResNet-101" if seed % 2 == 0 else "ViT-B"
        print(f"| {seed} | {shape} | {3 if (seed // 2) % 2 else 2} | {first.get('dims')} / {first.get('choices', 0):,} | "
              + " | ".join(cell(rows[b]) for b in args.backends) + f" | {_gap(first.get('presolve_gap'))} |", flush=True)
    ok = not disagreements
    agreement_line(disagreements, len(seeds))
    for b in args.backends:
        median = statistics.median(times[b]) if times[b] else float("nan")
        met = proven[b] == args.hard_seeds and median <= 1.0
        ok &= met
        print(f"- {b}: proven optimal on {proven[b]} of {args.hard_seeds}, median {median:.2f} s, max "
              f"{max(times[b], default=float('nan')):.2f} s: {'met' if met else 'NOT met'}")
    return ok


def limits(args) -> bool:
    # the one instance every backend still needs more than 2 s for (hard seed 7 was used until the multi-resource
    # search reached the dual's minimum; it is now proven in well under a second)
    print("\n### time_limit=2 s honoured (ResNet-152, latency, params and flops at 50%)\n")
    print("| backend | wall s | status | overrun s |")
    print("|---|---|---|---|")
    ok = True
    for b in args.backends:
        r = measure({"kind": "solve", "example": "resnet152", "sizes": {"params": True, "flops": True}, "backend": b,
                     "budget": {r: "50%" for r in ("latency", "params", "flops")}, "time_limit": 2.0}, 1)
        if "error" in r:
            print(f"| {b} | error: {r['error']} | | |")
            ok = False
            continue
        over = max(0.0, r["seconds"] - 2.0)
        ok &= over <= 0.7
        print(f"| {b} | {r['seconds']:.2f} | {r['status']} | {over:.2f} |", flush=True)
    return ok


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _gap(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.4f}%"


TARGETS = {"single": single, "multi": multi, "frontier": frontier, "hard": hard, "limits": limits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--backends", default="cpsat,milp,dp")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--hard-seeds", type=int, default=20, help="how many hard seeds (the target: 20)")
    parser.add_argument("--hard-first-seed", type=int, default=0, help="the first hard seed")
    parser.add_argument("--workers", type=int, default=1, help="frontier: solve budget by budget in this many "
                        "processes (where dp's one pass does not apply)")
    parser.add_argument("--quick", action="store_true", help="the first rows of each target only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    args.backends = args.backends.split(",")
    verdicts = {}
    start = time.perf_counter()
    for name in args.targets.split(","):
        verdicts[name] = TARGETS[name](args)
    print("\n### Verdicts\n")
    for name, ok in verdicts.items():
        print(f"- {name}: {'met' if ok else 'NOT met'}")
    print(f"\n(total {time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

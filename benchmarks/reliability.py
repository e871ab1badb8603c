"""Do time limits and Ctrl-C hold? Wall time of `solve(..., time_limit=L)` on large generated specs, every backend.

    python benchmarks/reliability.py [--limits 1,5,20] [--backends cpsat,milp,dp,mindtpy] [--specs ...]
    python benchmarks/reliability.py --sigint        # Ctrl-C: time from the signal to the end of `mdp-opt solve`

Prints one row per (spec, backend, presolve, limit): the wall time of the whole call, the overrun past
the limit, whether it is within the target (10% of the limit + 0.5 s), the status and the gap. With
`--sigint`, each backend's `mdp-opt solve` process gets SIGINT after a delay; the row gives the time to
exit, the exit code and the status printed. One solve at a time; run nothing else CPU-heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import mdp_opt

SPECS = {
    # name -> (generator, sizes): a ResNet-101 at 64 choices with float data, a ViT-L-like model at 32 choices,
    # and a chain whose 63 bilayer tables hold over 10^6 entries in all
    "resnet101-64-float": ("resnet101", dict(choices=64, integer=False)),
    "vit-large-32": ("vit12", dict(blocks=24, embed=1024, heads=16, choices=32, integer=False)),
    "chain-64x128": ("chain", dict(depth=64, choices=128, integer=False)),
}


def target(limit: float) -> float:
    return limit * 1.1 + 0.5


def time_limits(args: argparse.Namespace) -> int:
    print(f"{'spec':20s} {'backend':8s} {'presolve':8s} {'limit':>6s} {'wall s':>7s} {'overrun':>8s} "
          f"{'ok':3s} {'status':24s} {'gap':>9s}")
    worst = 0.0
    for label in args.specs.split(","):
        name, sizes = SPECS[label]
        spec = mdp_opt.examples.make(name, **sizes)
        for backend in args.backends.split(","):
            for presolve in (True, False):
                if presolve and not mdp_opt.get_backend(backend).has(mdp_opt.Feature.PRESOLVE):
                    continue
                for limit in (float(x) for x in args.limits.split(",")):
                    start = time.perf_counter()
                    result = mdp_opt.solve(spec, backend=backend, presolve=presolve, time_limit=limit)
                    wall = time.perf_counter() - start
                    over = wall - limit
                    worst = max(worst, wall / target(limit))
                    gap = "" if result.gap is None else f"{100 * result.gap:.3g}%"
                    print(f"{label:20s} {backend:8s} {str(presolve):8s} {limit:6.1f} {wall:7.2f} {over:+8.2f} "
                          f"{'yes' if wall <= target(limit) else 'NO':3s} {result.status.value:24s} {gap:>9s}",
                          flush=True)
    print(f"worst wall / target: {worst:.2f} (target: limit x 1.1 + 0.5 s)")
    return 0


def sigint(args: argparse.Namespace) -> int:
    print(f"{'backend':8s} {'presolve':8s} {'after s':>7s} {'exit':>5s} {'stop s':>7s} {'status':12s} stderr")
    for backend in args.backends.split(","):
        for presolve in ("true", "false"):
            command = [sys.executable, "-m", "mdp_opt.cli", "solve", "--example", "resnet101", "--budget", "25%",
                       "--backend", backend, "--json", "--option", f"presolve={presolve}"]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(args.delay)
            sent = time.perf_counter()
            process.send_signal(signal.SIGINT)
            out, err = process.communicate()
            stopped = time.perf_counter() - sent
            status = json.loads(out)["status"] if out.strip() else "-"
            print(f"{backend:8s} {presolve:8s} {args.delay:7.1f} {process.returncode:5d} {stopped:7.2f} "
                  f"{status:12s} {err.strip()!r}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="1,5,20")
    parser.add_argument("--backends", default="cpsat,milp,dp,mindtpy")
    parser.add_argument("--specs", default=",".join(SPECS))
    parser.add_argument("--sigint", action="store_true", help="measure Ctrl-C instead of time limits")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds before SIGINT (with --sigint)")
    args = parser.parse_args(argv)
    return sigint(args) if args.sigint else time_limits(args)


if __name__ == "__main__":
    sys.exit(main())

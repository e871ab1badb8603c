"""Wall time of every installed exact backend on the four real MDP instances.

    python benchmarks/instances.py [--repeats 5] [--threads 2] [--no-presolve] [--backends cpsat,milp,dp]

Prints one row per (instance, backend): status, objective, whether it equals the documented
proven optimum, and the median / min / max of `Result.wall_time` (the solve itself, after the
backend's import) over the repeats. The instances are the ones shipped in `mdp_opt.examples`.
`--threads` goes to the backends that take it (`Feature.THREADS`: cpsat, milp).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import mdp_opt
from mdp_opt import Feature


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per (instance, backend); the median is shown")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-presolve", action="store_true", help="solve(presolve=False): the backend alone")
    parser.add_argument("--time-limit", type=float, default=None, metavar="S")
    parser.add_argument("--backends", default=None, help="comma-separated (default: every installed exact one)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    backends = args.backends.split(",") if args.backends else mdp_opt.backends_with(
        Feature.EXACT, without=[Feature.REFERENCE])

    print(f"repeats={args.repeats} threads={args.threads} presolve={not args.no_presolve} "
          f"time_limit={args.time_limit}")
    print(f"{'instance':22s} {'backend':8s} {'status':9s} {'objective':>10s} {'ok':3s} "
          f"{'median s':>9s} {'min s':>8s} {'max s':>8s}")
    worst_ok = True
    for name in mdp_opt.examples.INSTANCES:
        spec = mdp_opt.examples.instance(name)
        optimum = mdp_opt.examples.PROVEN_OPTIMA[name]
        for backend in backends:
            options = {"threads": args.threads} if mdp_opt.get_backend(backend).has(Feature.THREADS) else {}
            results = [mdp_opt.solve(spec, backend=backend, presolve=not args.no_presolve,
                                     time_limit=args.time_limit, **options) for _ in range(args.repeats)]
            times = [r.wall_time for r in results]
            last = results[-1]
            ok = all(r.status is mdp_opt.Status.OPTIMAL and r.objective == optimum for r in results)
            worst_ok &= ok
            objective = "-" if last.objective is None else f"{last.objective:.0f}"
            print(f"{name:22s} {backend:8s} {last.status.value:9s} {objective:>10s} {'yes' if ok else 'NO':3s} "
                  f"{statistics.median(times):9.3f} {min(times):8.3f} {max(times):8.3f}", flush=True)
    return 0 if worst_ok else 1


if __name__ == "__main__":
    sys.exit(main())

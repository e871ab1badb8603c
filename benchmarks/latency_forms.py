"""Which latency model? Candidate forms fitted to the same whole-model measurements, compared on the solver's answers.

    python benchmarks/latency_forms.py resnet18 --size 64 --runtime eager
    python benchmarks/latency_forms.py --analyze benchmarks/latency_forms/*.json   # the comparison table

For one architecture (tests/zoo_models.py), input and runtime: raw measured tables (no
calibration), then, all in ONE window of interleaved runs (so the machine's drift does not
enter): the reference models of `latency_model.reference_configurations`, the raw spec's
optimal answers at 90-20% budgets, and five random configurations. Each candidate form is
fitted (non-negative least squares of relative error, as `latency_model` fits, each fitting answer counted
`--answer-weight` times as the calibration counts its answers; "factor" through the full model alone) to the
references plus the answers at 80/60/40/20%, and judged on the answers at 90/70/50/30%.
Features of a configuration: T, its raw table cost; Thi / Tlo, the part in terms over two or
more dims / one or none; Te / Tl, the part in the layers making up the first / second half of the
full model's table cost (`latency_model.split_tables`); P, its parameters (MB of float32); A, the
elements its operations write; B, its blocks kept; 1, a constant; and from files that list the terms, G, the
smallest entries of its kept gated terms, and Fe / Fl, Te / Tl above every term's smallest entry. The chosen
model (`latency_model`) is "Te+Tl+P+A+B+c" (from the fourteenth session, after OpenVINO; before it "Te+Tl+P+A+c",
and before the seventh session "T+P+A+c").
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt.evaluate import term_value
from mdp_opt import Term
from mdp_opt.adapters.torch import ImportanceWarning, MeasuredLatency, build_spec
from mdp_opt.adapters.torch.calibration import ANSWER_WEIGHT
from mdp_opt.adapters.torch.latency_model import (as_result, nnls, noise_spread, reference_configurations,
                                                  split_tables)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo_models import ARCHITECTURES, settle_batchnorm  # noqa: E402

FORMS = {"raw tables": [], "factor": ["T"], "T+c": ["T", "1"], "T+B+c": ["T", "B", "1"], "Thi+Tlo+c": ["Thi", "Tlo", "1"],
         "T+P": ["T", "P"], "T+P+c": ["T", "P", "1"], "Thi+Tlo+P+c": ["Thi", "Tlo", "P", "1"],
         "T+P+A+c": ["T", "P", "A", "1"], "Te+Tl+P+A+c": ["Te", "Tl", "P", "A", "1"]}
FORMS.update({"Te+Tl+P+A+B+c": ["Te", "Tl", "P", "A", "B", "1"], "Fe+Fl+G+P+A+c": ["Fe", "Fl", "G", "P", "A", "1"],
              "Fe+Fl+G+c": ["Fe", "Fl", "G", "1"]})
FIT_BUDGETS, CHECK_BUDGETS = (80, 60, 40, 20), (90, 70, 50, 30)


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = ARCHITECTURES[args.arch](num_classes=1000, image_size=args.size)
    settle_batchnorm(model, [torch.randn(16, 3, args.size, args.size) for _ in range(4)])
    x = torch.randn(args.batch, 3, args.size, args.size)
    data = [(torch.randn(8, 3, args.size, args.size), torch.randint(0, 1000, (8,))) for _ in range(4)]
    timer = MeasuredLatency(repeats=args.repeats, cache_dir=args.cache_dir, progress=False, calibrate=False,
                            runtime=args.runtime)
    extra = {"mlp_step": 4 * args.step, "head_dim_step": 8} if args.arch == "vit_tiny" else {}
    builder = build_spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportanceWarning)
        raw, handle = builder(model, x, data=data, loss_fn=F.cross_entropy, latency=timer, step=args.step,
                              costs=("latency", "params", "activations"), **extra)
    configs = {name: (choice, active) for name, choice, active in reference_configurations(raw)}
    references = list(configs)
    for pct in FIT_BUDGETS + CHECK_BUDGETS:
        result = mdp_opt.solve(raw, {"latency": f"{pct}%"})
        if result.has_solution:
            configs[f"answer {pct}%"] = (result.choice, result.active)
    rng = np.random.default_rng(0)
    for k in range(5):
        configs[f"random {k}"] = ({d.name: int(rng.integers(d.size)) for d in raw.dims},
                                  {b: bool(rng.random() < 0.7) for b in raw.block_names})
    models = [handle.apply(as_result(raw, c, a, n)) for n, (c, a) in configs.items()]
    start = time.perf_counter()
    samples = timer.measure_interleaved(models, x, args.runs)
    print(f"{args.arch} {args.size}px x{args.batch} {args.runtime}: {len(models)} models x {args.runs} runs in "
          f"{time.perf_counter() - start:.0f} s")
    dense = raw.replace(costs={"latency": tuple(t for t in raw.costs["latency"] if len(t.dims) >= 2) or (Term((), 0.0),)})
    early = raw.replace(costs={"latency": tuple(split_tables(raw.costs["latency"])[0]) or (Term((), 0.0),)})
    early_ids = {id(t) for t in split_tables(raw.costs["latency"])[0]}
    out = {"references": references, "configs": {},
           "terms": [{"least": float(t.table.min()), "gated": t.block is not None, "early": id(t) in early_ids}
                     for t in raw.costs["latency"]]}
    for (name, (choice, active)), s in zip(configs.items(), samples):
        ev = mdp_opt.evaluate(raw, choice, active)
        thi = mdp_opt.evaluate(dense, choice, active).costs["latency"]
        te = mdp_opt.evaluate(early, choice, active).costs["latency"]
        out["configs"][name] = {"measured_ms": statistics.median(s), "noise": noise_spread(s), "T": ev.costs["latency"],
                                "Thi": thi, "Tlo": ev.costs["latency"] - thi, "Te": te, "Tl": ev.costs["latency"] - te,
                                "P": 4 * ev.costs["params"] / 2 ** 20,
                                "B": float(sum(active.values())), "1": 1.0,
                                "terms": [term_value(t, choice, active) for t in raw.costs["latency"]],
                                "A": ev.costs.get("activations", 0.0)}
    return out


def floor_features(d: dict) -> None:
    """Add to each configuration, where the file lists its terms: G, the smallest entries of its active gated terms
    (what a block's layers cost at their narrowest: mostly fixed cost per operator, paid while the block is kept);
    Fe / Fl, the early / late tables above every term's smallest entry."""
    if "terms" not in d:
        return
    for c in d["configs"].values():
        active = [v > 0 or not info["gated"] for v, info in zip(c["terms"], d["terms"])]
        c["G"] = sum(info["least"] for on, info in zip(active, d["terms"]) if on and info["gated"])
        above = [(v - info["least"]) if on else 0.0 for v, on, info in zip(c["terms"], active, d["terms"])]
        c["Fe"] = sum(a for a, info in zip(above, d["terms"]) if info["early"])
        c["Fl"] = sum(a for a, info in zip(above, d["terms"]) if not info["early"])


def fit(configs: dict, columns: list[str], names: list[str], answer_weight: float = 1.0) -> np.ndarray | None:
    if not columns:
        return None
    if columns == ["T"]:
        return np.array([configs["full"]["measured_ms"] / configs["full"]["T"]])
    a = np.array([[configs[n][c] for c in columns] for n in names])
    y = np.array([configs[n]["measured_ms"] for n in names])
    root = np.sqrt([answer_weight if n.startswith("answer") else 1.0 for n in names])
    return nnls(a / y[:, None] * root[:, None], root)   # as `latency_model` fits: every coefficient >= 0


def predict(configs: dict, columns: list[str], coef: np.ndarray | None, name: str) -> float:
    c = configs[name]
    return c["T"] if coef is None else float(sum(k * c[col] for k, col in zip(coef, columns)))


def analyze(paths: list[str], answer_weight: float = ANSWER_WEIGHT) -> None:
    worst: dict[str, list[float]] = {f: [] for f in FORMS}
    within: dict[str, list[bool]] = {f: [] for f in FORMS}
    print("| case | noise | " + " | ".join(FORMS) + " |")
    print("|---|---:|" + "---:|" * len(FORMS))
    for path in paths:
        d = json.loads(Path(path).read_text())
        floor_features(d)
        configs = d["configs"]
        fit_on = d["references"] + [f"answer {p}%" for p in FIT_BUDGETS if f"answer {p}%" in configs]
        check = [f"answer {p}%" for p in CHECK_BUDGETS if f"answer {p}%" in configs]
        cells = []
        for form, columns in FORMS.items():
            if not all(col in configs["full"] for col in columns):      # a feature this file cannot give
                cells.append("-")
                continue
            coef = fit(configs, columns, fit_on, answer_weight)
            errors = [abs(predict(configs, columns, coef, n) / configs[n]["measured_ms"] - 1) for n in check]
            worst[form].append(max(errors))
            within[form] += [e <= 0.05 for e in errors]
            cells.append(f"{100 * statistics.mean(errors):.1f} / {100 * max(errors):.1f}")
        noise = statistics.median(c["noise"] for c in configs.values())
        print(f"| {d['case']} | {100 * noise:.1f}% | " + " | ".join(cells) + " |")
    print("| worst case | | " + " | ".join(f"{100 * max(v):.1f}" if v else "-" for v in worst.values()) + " |")
    print("| mean of worst | | " + " | ".join(f"{100 * statistics.mean(v):.1f}" if v else "-"
                                             for v in worst.values()) + " |")
    print("| answers within 5% | | " + " | ".join(f"{sum(v)}/{len(v)}" for v in within.values()) + " |")
    print(f"(cells: mean / worst |error| in % on the answers at 90/70/50/30%; each fitting answer counted "
          f"{answer_weight:g} times)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", nargs="?", choices=sorted(ARCHITECTURES))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runtime", default="eager")
    p.add_argument("--step", type=int, default=None, help="channel step (default: latency_accuracy.STEPS)")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "latency_forms"))
    p.add_argument("--analyze", nargs="*", help="JSON files written by earlier runs: print the comparison")
    p.add_argument("--answer-weight", type=float, default=ANSWER_WEIGHT,
                   help="how many times each fitting answer's squared error counts (the calibration's; tables "
                        "before the fourteenth session: 1)")
    args = p.parse_args(argv)
    if args.analyze is not None:
        analyze(sorted(f for pattern in args.analyze for f in glob.glob(pattern)), args.answer_weight)
        return 0
    if args.arch is None:
        p.error("give an architecture, or --analyze FILES")
    from latency_accuracy import STEPS  # noqa: PLC0415 (benchmarks/)
    args.step = args.step or STEPS[args.arch]
    result = measure(args)
    result["case"] = f"{args.arch} {args.size}px x{args.batch} {args.runtime}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.arch}-{args.size}x{args.batch}-{args.runtime}.json"
    path.write_text(json.dumps(result))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Open-loop latency accuracy: one solve per budget, the pruned model measured, on six architectures.

    python benchmarks/latency_accuracy.py                  # everything (hours on 2 CPUs)
    python benchmarks/latency_accuracy.py --archs resnet18 --configs 64x1 --runtimes eager   # one case
    python benchmarks/latency_accuracy.py --report-only                           # table and plot from the results
    python benchmarks/latency_accuracy.py --device cuda --runtimes eager          # on a GPU

For every architecture (tests/zoo_models.py: ResNet-18, ResNet-50, MobileNet-V2, VGG-11,
EfficientNet-B0 with squeeze-excitation, ViT-Tiny; random weights with BatchNorm statistics
settled on random images), input (`--configs`: size x batch), and runtime (eager PyTorch,
ONNX Runtime; `--runtimes openvino` for OpenVINO), it builds the spec as a user would (`build_spec` with `MeasuredLatency`:
measured tables, then the default affine calibration), solves it ONCE at each budget (no
re-measurement), applies the answer and measures the pruned model; the full model is measured
in the same interleaved runs, and so are the calibration's reference models (not reported): the
answers run in a rotation as long as the calibration's (see `run_case`). Per budget it prints:
the spec's prediction, the measurement (median of `--runs` runs), the error, and the noise floor
(the spread of the medians of five interleaved subsets of the runs); the error after correcting
for the machine's drift since the calibration (the median over the full model and the reference
models of now / at calibration); the error that one factor through the full model (the previous
default) would make on the same answer; measured / budget; and the answer timed alone, run after
run, as `measure_latency` times one model (a small model runs faster alone than just after other
models; the calibration settles each model's turn, `--settle-ms`, to time it as it runs alone), in
three blocks taken in turn.

Results are appended to a JSON-lines file (`--results`), so a long run can be split and
resumed; `--report-only` prints the table and writes the plot (`--plot`, predicted vs measured
and the error per budget) from that file. Channel steps per architecture are in STEPS
(documented in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt.adapters.torch import ImportanceWarning, MeasuredLatency, build_spec
from mdp_opt.adapters.torch.latency import CALIBRATION_SETTLE_MS
from mdp_opt.adapters.torch.latency_model import as_result, noise_spread, reference_configurations
from mdp_opt.adapters.torch.runtimes import get_runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo_models import ARCHITECTURES, settle_batchnorm  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = {"resnet18": 32, "resnet50": 64, "mobilenet_v2": 32, "vgg11": 64, "efficientnet_b0": 32, "vit_tiny": 16}
VIT_STEPS = {"mlp_step": 64, "head_dim_step": 8}
TARGET = 0.05
ALONE_BLOCKS = 3


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        size, _, batch = item.strip().partition("x")
        out.append((int(size), int(batch or 1)))
    return out


def exact_backend() -> str:
    for name in ("milp", "cpsat", "dp"):
        if name in mdp_opt.installed_backends():
            return name
    raise SystemExit("no exact backend installed (pip install 'mdp-opt[milp]')")


def machine_drift(points: list[dict], names: list[str], samples: list[list[float]]) -> float:
    """How much faster or slower the machine runs now than at calibration: the median over the models measured
    both times (the full model and the reference models) of median now / median then."""
    then = {p["model"]: p["measured_ms"] for p in points}
    return statistics.median(statistics.median(s) / then[n] for n, s in zip(names, samples) if n in then)


def timed_alone(timer: MeasuredLatency, models: list[torch.nn.Module], x: torch.Tensor, runs: int) -> list[float]:
    """Each model's median ms alone, run after run, as a user times one model (`measure_latency`), not in a
    rotation: in ALONE_BLOCKS blocks of `runs` / ALONE_BLOCKS runs taken in turn, the median of the blocks'
    medians, so that one slow phase of the machine does not fall on one model only."""
    blocks: list[list[float]] = [[] for _ in models]
    for _ in range(ALONE_BLOCKS):
        for times, model in zip(blocks, models):
            times.append(timer.measure(model, x, repeats=max(1, runs // ALONE_BLOCKS)))
    return [statistics.median(b) for b in blocks]


def run_case(arch: str, size: int, batch: int, runtime: str, args: argparse.Namespace) -> dict:
    """Build, calibrate, solve once per budget, measure; one JSON-ready record."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](scale=args.scale, num_classes=1000, image_size=size).to(device)
    settle_batchnorm(model, [torch.randn(16, 3, size, size, device=device) for _ in range(4)])
    x = torch.randn(batch, 3, size, size, device=device)
    data = [(torch.randn(8, 3, size, size, device=device), torch.randint(0, 1000, (8,), device=device))
            for _ in range(4)]
    step = max(1, int(STEPS[arch] * args.step_scale))
    extra = {k: max(1, int(v * args.step_scale)) for k, v in VIT_STEPS.items()} if arch == "vit_tiny" else {}

    def timer(calibrate: bool | str) -> MeasuredLatency:
        return MeasuredLatency(threads=args.threads, repeats=args.repeats, cache_dir=args.cache_dir, progress=False,
                               calibrate=calibrate, runtime=runtime, calibration_runs=args.runs,
                               calibration_streak=args.streak, calibration_settle_ms=args.settle_ms)

    builder = build_spec
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImportanceWarning)
        raw, _ = builder(model, x, data=data, loss_fn=F.cross_entropy, latency=timer(False), step=step, **extra)
        tables_s = time.perf_counter() - start
        spec, handle = builder(model, x, data=data, loss_fn=F.cross_entropy, latency=timer(True), step=step, **extra)
    build_s = time.perf_counter() - start
    calibration = spec.meta["latency_calibration"]
    full_point = next(p for p in calibration["points"] if p["model"] == "full")
    factor = full_point["measured_ms"] / raw.full_cost("latency")    # the previous default: one factor

    backend = args.backend or exact_backend()
    answers = {}
    for pct in args.budgets:
        result = mdp_opt.solve(spec, {"latency": f"{pct}%"}, backend=backend, time_limit=args.time_limit)
        answers[pct] = result
    full_choice, full_active = spec.full_configuration()
    full_model = handle.apply(as_result(spec, full_choice, full_active, "full"))
    solved = [pct for pct, r in answers.items() if r.has_solution]
    models = [full_model] + [handle.apply(answers[pct]) for pct in solved]
    # The rotation the calibration measured in: its reference models run between the answers' runs (timed, not
    # used). A small model measures 13-30% slower when other models run between its runs than when it runs back to
    # back, and up to 7% slower among 16 others than among 4 (benchmarks/rotation_effect.py; RESULTS.md, seventh
    # session), so without settling turns (`--settle-ms 0`) validating in a shorter rotation than the
    # calibration's reads as drift.
    references = [(name, choice, active) for name, choice, active in reference_configurations(spec) if name != "full"]
    models += [handle.apply(as_result(spec, choice, active, name)) for name, choice, active in references]
    timer_now = timer(False)
    measured = timer_now.measure_interleaved(models, x, args.runs, streak=args.streak, settle_ms=args.settle_ms)
    full_now = statistics.median(measured[0])
    drift = machine_drift(calibration["points"], ["full"] + [name for name, _, _ in references],
                          [measured[0]] + measured[1 + len(solved):])
    alone = dict(zip(solved, timed_alone(timer_now, models[1:len(solved) + 1], x, args.runs)))
    rows = []
    for pct in args.budgets:
        result = answers[pct]
        if not result.has_solution:
            rows.append({"budget": pct, "status": result.status.value})
            continue
        samples = measured[1 + solved.index(pct)]
        ms = statistics.median(samples)
        predicted = result.costs["latency"]
        raw_ms = mdp_opt.evaluate(raw, result.choice, result.active).costs["latency"]
        rows.append({"budget": pct, "status": result.status.value, "predicted_ms": predicted, "measured_ms": ms,
                     "error": predicted / ms - 1, "noise": noise_spread(samples),
                     "drift_corrected_error": predicted / (ms / drift) - 1,
                     "measured_alone_ms": alone[pct], "error_alone": predicted / alone[pct] - 1,
                     "factor_error": factor * raw_ms / ms - 1, "budget_ms": pct / 100 * spec.full_cost("latency"),
                     "blocks_kept": f"{sum(result.active.values())}/{len(result.active)}"})
    return {"arch": arch, "size": size, "batch": batch, "runtime": runtime, "device": args.device, "step": step,
            "scale": args.scale, "tables_s": tables_s, "calibrated_build_s": build_s - tables_s, "full_ms_calibration": full_point["measured_ms"],
            "full_ms_now": full_now, "full_noise": noise_spread(measured[0]), "drift": drift,
            "drift_full": full_now / full_point["measured_ms"],
            "calibration": {k: calibration[k] for k in ("factors", "constant_ms", "points") if k in calibration},
            "calibration_note": calibration.get("note", ""), "importance_warnings": len(caught),
            "dims": len(spec.dims), "blocks": len(spec.blocks), "runs": args.runs, "repeats": args.repeats,
            "rotation": len(models), "calibration_rotation": len(calibration["points"]), "streak": args.streak,
            "settle_ms": args.settle_ms,
            "rows": rows, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def print_case(case: dict) -> None:
    print(f"\n{case['arch']} {case['size']}px batch {case['batch']} {case['runtime']} ({case['device']}), step "
          f"{case['step']}: {case['dims']} dims, {case['blocks']} blocks; importance and tables {case['tables_s']:.0f} s, "
          f"again with calibration {case['calibrated_build_s']:.0f} s; full model {case['full_ms_now']:.3f} ms (noise "
          f"{100 * case['full_noise']:.1f}%), {100 * (case['drift'] - 1):+.1f}% since calibration")
    for r in case["rows"]:
        if "measured_ms" not in r:
            print(f"  {r['budget']:3d}%: {r['status']}")
            continue
        print(f"  {r['budget']:3d}%: predicted {r['predicted_ms']:9.3f} ms  measured {r['measured_ms']:9.3f} ms  "
              f"error {100 * r['error']:+6.1f}%  noise {100 * r['noise']:4.1f}%  drift-corrected "
              f"{100 * r['drift_corrected_error']:+6.1f}%  one factor {100 * r['factor_error']:+6.1f}%  "
              f"measured/budget {r['measured_ms'] / r['budget_ms']:.3f}  blocks {r['blocks_kept']}"
              + (f"  alone {r['measured_alone_ms']:.3f} ms ({100 * r['error_alone']:+.1f}%)"
                 if "measured_alone_ms" in r else ""))


def verdict(error: float, noise: float) -> str:
    if abs(error) <= TARGET:
        return "yes"
    return "below noise" if abs(error) <= noise else "NO"


def markdown(cases: list[dict]) -> str:
    lines = ["| arch | input | runtime | budget | predicted ms | measured ms | error | noise | drift-corr. error | "
             "within 5% | one factor | measured / budget |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|"]
    for c in cases:
        for r in c["rows"]:
            label = f"| {c['arch']} | {c['size']}px x{c['batch']} | {c['runtime']} | {r['budget']}% |"
            if "measured_ms" not in r:
                lines.append(f"{label} {r['status']} | | | | | | | |")
                continue
            lines.append(f"{label} {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | {100 * r['error']:+.1f}% | "
                         f"{100 * r['noise']:.1f}% | {100 * r['drift_corrected_error']:+.1f}% | "
                         f"{verdict(r['error'], r['noise'])} | {100 * r['factor_error']:+.1f}% | "
                         f"{r['measured_ms'] / r['budget_ms']:.3f} |")
    return "\n".join(lines)


def summary(cases: list[dict]) -> str:
    rows = [r for c in cases for r in c["rows"] if "measured_ms" in r]
    if not rows:
        return "no measured rows"
    def share(pred) -> str:
        return f"{sum(1 for r in rows if pred(r))}/{len(rows)}"
    errors = [abs(r["error"]) for r in rows]
    corrected = [abs(r["drift_corrected_error"]) for r in rows]
    factor = [abs(r["factor_error"]) for r in rows]
    return (f"{len(rows)} answers: |error| <= 5%: {share(lambda r: abs(r['error']) <= TARGET)} "
            f"(drift-corrected: {share(lambda r: abs(r['drift_corrected_error']) <= TARGET)}; within 5% or below "
            f"noise: {share(lambda r: abs(r['error']) <= max(TARGET, r['noise']))}); mean |error| "
            f"{100 * statistics.mean(errors):.1f}%, worst {100 * max(errors):.1f}%; drift-corrected mean "
            f"{100 * statistics.mean(corrected):.1f}%, worst {100 * max(corrected):.1f}%; one factor mean "
            f"{100 * statistics.mean(factor):.1f}%, worst {100 * max(factor):.1f}%; measured over budget: "
            f"{share(lambda r: r['measured_ms'] > r['budget_ms'])}, worst "
            f"{100 * (max(r['measured_ms'] / r['budget_ms'] for r in rows) - 1):+.1f}%" + alone_summary(rows))


def groups(cases: list[dict]) -> str:
    """Per input and runtime: answers, within 5% (as measured, drift-corrected, timed alone), mean and worst |error|."""
    lines = ["| input | runtime | answers | within 5% | drift-corrected within 5% | timed alone within 5% | "
             "mean abs error | worst |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(c["size"], c["batch"], c["runtime"]) for c in cases})
    for size, batch, runtime in keys:
        rows = [r for c in cases if (c["size"], c["batch"], c["runtime"]) == (size, batch, runtime)
                for r in c["rows"] if "measured_ms" in r]
        if not rows:
            continue
        alone = [r for r in rows if "error_alone" in r]
        errors = [abs(r["error"]) for r in rows]
        lines.append(f"| {size}px x{batch} | {runtime} | {len(rows)} | {sum(e <= TARGET for e in errors)} | "
                     f"{sum(abs(r['drift_corrected_error']) <= TARGET for r in rows)} | "
                     f"{sum(abs(r['error_alone']) <= TARGET for r in alone)} of {len(alone)} | "
                     f"{100 * statistics.mean(errors):.1f}% | {100 * max(errors):.1f}% |")
    return "\n".join(lines)


def alone_summary(rows: list[dict]) -> str:
    """The answers also timed alone (run after run, as `measure_latency` times a model; runs since the seventh
    session): how far the prediction is from that."""
    alone = [r for r in rows if "error_alone" in r]
    if not alone:
        return ""
    errors = [r["error_alone"] for r in alone]
    return (f"; timed alone ({len(alone)} answers): within 5% {sum(abs(e) <= TARGET for e in errors)}/{len(alone)}, "
            f"mean error {100 * statistics.mean(errors):+.1f}%, range {100 * min(errors):+.1f}% to "
            f"{100 * max(errors):+.1f}%")


def plot(cases: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = sorted({c["runtime"] for c in cases})
    budgets = sorted({r["budget"] for c in cases for r in c["rows"]}, reverse=True)
    colors = dict(zip(budgets, plt.cm.viridis([i / max(1, len(budgets) - 1) for i in range(len(budgets))])))
    markers = dict(zip(sorted({c["arch"] for c in cases}), "osD^vP*X"))
    fig, axes = plt.subplots(2, len(runtimes), figsize=(6.5 * len(runtimes), 10), squeeze=False)
    for col, runtime in enumerate(runtimes):
        top, bottom = axes[0][col], axes[1][col]
        mine = [c for c in cases if c["runtime"] == runtime]
        lows = []
        for c in mine:
            for r in c["rows"]:
                if "measured_ms" not in r:
                    continue
                top.scatter(r["predicted_ms"], r["measured_ms"], color=colors[r["budget"]], marker=markers[c["arch"]],
                            s=28)
                lows += [r["predicted_ms"], r["measured_ms"]]
                jitter = (list(markers).index(c["arch"]) - len(markers) / 2) * 0.6
                bottom.errorbar(r["budget"] + jitter, 100 * r["error"], yerr=100 * r["noise"] / 2,
                                color=colors[r["budget"]], marker=markers[c["arch"]], ms=5, capsize=2, lw=0.8)
        if lows:
            lo, hi = min(lows) / 1.3, max(lows) * 1.3
            top.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            top.fill_between([lo, hi], [lo / (1 + TARGET), hi / (1 + TARGET)], [lo / (1 - TARGET), hi / (1 - TARGET)],
                             color="0.85", label="within 5%")
            top.set_xscale("log")
            top.set_yscale("log")
        top.set_xlabel("predicted latency (ms, one solve)")
        top.set_ylabel("measured latency of the pruned model (ms)")
        top.set_title(f"{runtime}: predicted vs measured")
        bottom.axhspan(-100 * TARGET, 100 * TARGET, color="0.85")
        bottom.axhline(0, color="k", lw=0.8)
        bottom.set_xlabel("latency budget (% of the full model)")
        bottom.set_ylabel("prediction error (%), bars: noise floor")
        bottom.set_title(f"{runtime}: error per budget")
    handles = [plt.Line2D([], [], color="k", marker=m, ls="", label=a) for a, m in markers.items()]
    handles += [plt.Line2D([], [], color=colors[b], marker="o", ls="", label=f"{b}% budget") for b in budgets]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def load(path: Path) -> list[dict]:
    """The results in `path`, the latest run of each case (architecture, input, runtime, device) only."""
    if not path.exists():
        return []
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            case = json.loads(line)
            latest[(case["arch"], case["size"], case["batch"], case["runtime"], case["device"])] = case
    return list(latest.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated (default: all six)")
    p.add_argument("--configs", default="224x1,64x1,64x32", help="input size x batch, comma-separated")
    p.add_argument("--runtimes", default="eager,onnxruntime", help="comma-separated: eager, onnxruntime, openvino")
    p.add_argument("--budgets", default="90,70,50,30", help="latency budgets in percent")
    p.add_argument("--device", default="cpu", help="cpu or cuda (ONNX Runtime and OpenVINO run on CPU only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=21, help="timed repetitions per table entry")
    p.add_argument("--runs", type=int, default=30, help="runs of each whole model (calibration and validation)")
    p.add_argument("--streak", type=int, default=1, help="runs of a whole model kept per turn, after one dropped "
                                                         "(calibration and validation; 1: run by run)")
    p.add_argument("--settle-ms", type=float, default=CALIBRATION_SETTLE_MS,
                   help="untimed runs of a whole model at the start of each turn, in ms (calibration and validation)")
    p.add_argument("--scale", type=float, default=1.0, help="channel widths x this (1: the published widths)")
    p.add_argument("--step-scale", type=float, default=1.0, help="channel steps x this")
    p.add_argument("--backend", default=None, help="mdp-opt backend (default: milp, cpsat or dp)")
    p.add_argument("--time-limit", type=float, default=120.0)
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "mdp-opt-latency-accuracy"))
    p.add_argument("--results", default=str(HERE / "latency_accuracy.jsonl"), help="JSON lines, appended")
    p.add_argument("--plot", default=str(HERE / "latency_accuracy.png"))
    p.add_argument("--report-only", action="store_true", help="print and plot the results file; measure nothing")
    args = p.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    results = Path(args.results)
    if not args.report_only:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available")
        for arch in args.archs.split(","):
            if arch not in ARCHITECTURES:
                raise SystemExit(f"--archs: unknown {arch!r}; choose from {sorted(ARCHITECTURES)}")
        print(f"mdp-opt latency accuracy: torch {torch.__version__}, {args.threads} thread(s), device {args.device}; "
              f"tables: {args.repeats} repetitions per entry; whole models: {args.runs} interleaved runs")
        for size, batch in parse_configs(args.configs):
            for arch in args.archs.split(","):
                for runtime in args.runtimes.split(","):
                    try:
                        get_runtime(runtime).check(torch.device(args.device))
                    except ValueError as e:      # a runtime that times another device (ONNX Runtime, OpenVINO: CPU)
                        print(f"skip {arch} {size}x{batch} {runtime}: {e}")
                        continue
                    case = run_case(arch, size, batch, runtime, args)
                    print_case(case)
                    with results.open("a") as f:
                        f.write(json.dumps(case) + "\n")
    cases = load(results)
    if not cases:
        print(f"no results in {results}")
        return 1
    print("\n" + markdown(cases))
    print("\n" + groups(cases))
    print("\n" + summary(cases))
    if args.plot:
        plot(cases, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

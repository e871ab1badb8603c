"""`mdp_opt.bench` and `mdp-opt bench`: rows, agreement between proofs, errors as rows, outputs."""

from __future__ import annotations

import json
import statistics

import pytest

import mdp_opt
from mdp_opt import bench, cli, examples
from mdp_opt.plots import plot_bench
from reference import EXACT, REFERENCE

TINY = ["example:chain,depth=4,choices=3", "example:resnet50,blocks=[2],choices=2",
        "example:vit12,blocks=1,heads=2,choices=2"]


def smallest(spec, budgets, options, status=mdp_opt.Status.FEASIBLE, bound=True):
    """A real but poor answer: every dim at its smallest choice, every block removed."""
    choice = {d: 0 for d in spec.dim_names}
    active = {b: False for b in spec.block_names}
    value = mdp_opt.evaluate(spec, choice, active).value
    return mdp_opt.Answer(status, choice, active, objective=value, bound=value if bound else None)


@pytest.fixture
def liars(register):
    register("false-optimal", lambda s, b, o: smallest(s, b, o, mdp_opt.Status.OPTIMAL))
    register("false-bound", lambda s, b, o: smallest(s, b, o))
    register("heuristic", lambda s, b, o: smallest(s, b, o, bound=False))
    register("false-infeasible", lambda s, b, o: mdp_opt.Answer(mdp_opt.Status.INFEASIBLE))

    def crash(spec, budgets, options):
        raise RuntimeError("solver crashed on purpose")
    register("crash", crash)


def run_cli(args, capsys):
    code = cli.main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_exact_backends_agree_with_brute_force_on_tiny_specs():
    report = bench.bench(TINY, backends=[REFERENCE, *EXACT])
    assert not report.disagreements
    assert {r.status for r in report.rows} == {"optimal"}
    assert len(report.rows) == len(TINY) * (1 + len(EXACT))
    assert all(r.gap == 0 for r in report.rows)
    assert all(r.agree is (True if EXACT else None) for r in report.rows)


@pytest.mark.parametrize("liar", ["false-optimal", "false-bound", "false-infeasible"])
def test_a_false_proof_is_a_disagreement_and_exits_non_zero(liars, liar, capsys):
    report = bench.bench(TINY[:1], backends=["brute", liar])
    assert len(report.disagreements) == 1 and liar in report.disagreements[0]
    assert all(r.agree is False for r in report.rows)
    code, out, err = run_cli([TINY[0], "--backends", f"brute,{liar}"], capsys)
    assert code == 1
    assert "EXACT RESULTS DISAGREE" in err and liar in err
    assert "**NO**" in out


def test_a_heuristic_without_a_bound_is_not_a_disagreement_and_gets_a_gap(liars, capsys):
    report = bench.bench(TINY[:1], backends=["brute", "heuristic"])
    assert not report.disagreements
    brute, heuristic = report.rows
    assert heuristic.status == "feasible"
    assert heuristic.gap == pytest.approx((brute.objective - heuristic.objective) / brute.objective)
    assert run_cli([TINY[0], "--backends", "brute,heuristic"], capsys)[0] == 0


def test_a_heuristic_beating_a_proven_bound_is_a_disagreement(register):
    register("too-low", lambda s, b, o: smallest(s, b, o, mdp_opt.Status.OPTIMAL))
    register("better", lambda s, b, o: mdp_opt.get_backend(REFERENCE).solve(s, b, {}))
    report = bench.bench(TINY[:1], backends=["too-low", "better"])
    assert report.disagreements and "too-low proves bound" in report.disagreements[0]


def test_errors_become_rows_and_the_run_goes_on(liars, capsys):
    report = bench.bench(TINY[:2], backends=["crash", "brute"])
    assert [r.status for r in report.rows] == ["error", "optimal"] * 2
    assert "RuntimeError: solver crashed on purpose" in report.rows[0].message
    assert not report.disagreements
    too_big = bench.bench(["example:chain"], backends=["brute"]).rows[0]
    assert too_big.status == "error" and "brute-force limit" in too_big.message
    code, out, err = run_cli([TINY[0], "--backends", "crash,brute"], capsys)
    assert code == 0 and "solver crashed on purpose" in out and "1 solve(s) failed" in err
    assert "[2/2] " in err     # progress lines on stderr when it is not a terminal


def test_json_output_is_a_list_of_rows(capsys):
    code, out, _ = run_cli([*TINY[:2], "--backends", "brute", "--json", "--repeats", "2"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["spec"] for r in rows] == [examples.make("chain", depth=4, choices=3).name,
                                         examples.make("resnet50", blocks=(2,), choices=2).name]
    for r in rows:
        assert r["status"] == "optimal" and r["backend"] == "brute"
        assert len(r["times"]) == 2 and r["wall_time"] == statistics.median(r["times"])
        assert r["objective"] == r["bound"] and r["gap"] == 0


def test_markdown_file_has_a_line_per_row(tmp_path, capsys):
    path = tmp_path / "bench.md"
    code, out, _ = run_cli([*TINY, "--backends", "brute", "--markdown", str(path)], capsys)
    table = path.read_text()
    assert code == 0 and table == out
    lines = table.strip().splitlines()
    assert lines[0].startswith("| spec | backend | status |") and len(lines) == 2 + len(TINY)
    assert all("| brute | optimal |" in line for line in lines[2:])


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "times.png"
    plot_bench(bench.bench(TINY[:2], backends=["brute"]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spec_files_directories_and_duplicate_labels(tmp_path):
    spec = examples.make("chain", depth=3, choices=2)
    mdp_opt.save(spec, tmp_path / "a.json")
    mdp_opt.save(spec.replace(name="other"), tmp_path / "b.json")
    cases = bench.load_specs([tmp_path, tmp_path / "a.json", spec])
    assert [label for label, _ in cases] == ["a", "b", "a#2", spec.name]
    assert all(s == spec for _, s in cases[:1] + cases[2:])
    (tmp_path / "empty").mkdir()
    with pytest.raises(mdp_opt.SpecError, match="no \\*.json"):
        bench.load_specs([tmp_path / "empty"])
    with pytest.raises(mdp_opt.SpecError, match="cannot read"):
        bench.load_specs([tmp_path / "missing.json"])


def test_example_sources_parse_sizes_and_reject_bad_ones():
    assert bench.parse_example("resnet50,blocks=[1,1],choices=4,seed=2") == examples.make(
        "resnet50", seed=2, blocks=(1, 1), choices=4)
    with pytest.raises(mdp_opt.SpecError, match="resnet50"):
        bench.parse_example("resnet5")
    with pytest.raises(mdp_opt.SpecError, match="not a number"):
        bench.parse_example("chain,depth=four")


def test_options_reach_every_backend_or_the_one_named(register):
    register("echo", lambda s, b, o: smallest(s, b, o) if o.get("flag") == "x" else mdp_opt.Answer("error"))
    rows = bench.bench(TINY[:1], backends=["brute", "echo"], options={"brute.limit": 10, "echo.flag": "x"}).rows
    assert rows[0].status == "error" and "limit of 10" in rows[0].message
    assert rows[1].status == "feasible"
    rows = bench.bench(TINY[:1], backends=["brute"], options={"threads": 2}).rows
    assert rows[0].status == "error" and "'threads'" in rows[0].message
    with pytest.raises(mdp_opt.SpecError, match="'cpsat' is not one of"):
        bench.bench(TINY[:1], backends=["brute"], options={"cpsat.threads": 2})


def test_unknown_backend_and_bad_repeats_are_usage_errors(capsys):
    code, _, err = run_cli([TINY[0], "--backends", "nonesuch"], capsys)
    assert code == 2 and "nonesuch" in err and "brute" in err
    with pytest.raises(mdp_opt.SpecError, match="repeats"):
        bench.bench(TINY[:1], backends=["brute"], repeats=0)


def test_default_backends_are_the_installed_ones_but_brute(register):
    register("extra", lambda s, b, o: smallest(s, b, o))
    names = bench._check_backends(None)
    assert "extra" in names and "brute" not in names

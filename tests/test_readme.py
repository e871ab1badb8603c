"""The README's examples run as written: the hand-written spec snippet and the main job."""

from __future__ import annotations

import re
from pathlib import Path

from mdp_opt.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_hand_written_spec_snippet_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    snippet = re.search(r"Writing a spec by hand:\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "toy.json").exists()
    assert "status     optimal" in capsys.readouterr().out


def test_main_job_command_solves_the_shipped_example(capsys):
    text = README.read_text()
    command = re.search(r"bash scripts/setup\.sh && \.venv/bin/mdp-opt (solve [^\n]*)", text).group(1)
    assert main(command.split()) == 0
    out = capsys.readouterr().out
    assert out.startswith("status     optimal")


def test_python_api_snippet_runs(capsys):
    """The README's first Python block, as written, on the shipped real instance."""
    text = README.read_text()
    snippet = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.status.value == "optimal" and result.costs["latency"] <= result.budgets["latency"]
    assert "status     optimal" in capsys.readouterr().out


SPEC_FORMAT = README.parent / "docs" / "SPEC_FORMAT.md"


def test_the_spec_format_doc_examples_load(tmp_path, monkeypatch):
    import mdp_opt
    text = SPEC_FORMAT.read_text()
    example = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    spec = mdp_opt.loads(example)
    assert spec.name == "toy-resnet" and spec.budgets == {"latency": 0.7}
    monkeypatch.chdir(tmp_path)
    code = re.search(r"## In Python\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "SPEC_FORMAT.md", "exec"), namespace)
    assert namespace["spec"] == spec


def test_shared_presolve_snippet_runs(capsys):
    text = README.read_text()
    snippet = re.search(r"Sharing the presolve across budgets:\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert [r.status.value for r in namespace["results"]] == ["optimal"] * 3
    assert namespace["shared"].stats["solves"] == 3 and namespace["shared"].stats["passes_reused"] > 0
    assert "passes_run" in capsys.readouterr().out

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

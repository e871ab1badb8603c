"""Reliability: the deadline and the stop signal, Ctrl-C, files written whole, and a command line that ends cleanly.

Timings are never asserted (the machine is shared); what is asserted is what a user sees: the status, the
answer kept, the exit code, one line on stderr, no process or file left behind. The time-limit overrun
itself is measured by `benchmarks/reliability.py`.
"""

from __future__ import annotations

import _thread
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fuzz

import mdp_opt
from mdp_opt import Answer, Feature, Status, backends_with
import mdp_opt.files
from mdp_opt.deadline import Deadline
from mdp_opt.files import atomic_write_text

# every backend takes more than 8 s on this spec without the presolve (measured), so a stop always finds it busy
BUSY = dict(name="resnet101", choices=32, integer=False)


@pytest.fixture(scope="module")
def busy_spec():
    return mdp_opt.examples.make(BUSY["name"], choices=BUSY["choices"], integer=BUSY["integer"])


@pytest.fixture
def ctrl_c_handled():
    """Python's own Ctrl-C handler for the test, as in an interactive session: a process started in the background
    by a non-interactive shell ignores SIGINT, and then `_thread.interrupt_main` does nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _sigint_by_default() -> None:
    """For a child process: SIGINT at its default, so that Python installs its Ctrl-C handler at start-up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def solve_threads() -> list[threading.Thread]:
    """The threads `solve()` runs its work in (see `mdp_opt.deadline.Deadline.run`)."""
    return [t for t in threading.enumerate() if t.name == "mdp-opt solve" and t.is_alive()]


def wait_until(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def interrupt_main_after(seconds: float) -> threading.Timer:
    """Ctrl-C as the user sends it: a KeyboardInterrupt in the main thread, `seconds` from now."""
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


@pytest.mark.parametrize("backend", backends_with(Feature.INTERRUPT))
def test_ctrl_c_stops_the_backend_and_keeps_the_best_answer(backend, busy_spec, ctrl_c_handled):
    """The backend itself stops, not just the call: its thread ends soon after the call returns (a CP-SAT
    search that had not started when the stop came ran on to its optimum, over 8 s here, in the background)."""
    before = set(solve_threads())
    timer = interrupt_main_after(0.5)
    try:
        with pytest.raises(mdp_opt.Interrupted) as info:
            mdp_opt.solve(busy_spec, backend=backend, presolve=False)
    finally:
        timer.cancel()
    assert wait_until(lambda: not set(solve_threads()) - before, seconds=5), "the backend ran on after Ctrl-C"
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert result.status is Status.INTERRUPTED and result.stats["stopped_by"] == "Ctrl-C"
    if result.has_solution:          # verified like any answer: within budget
        assert result.costs["latency"] <= result.budgets["latency"] * (1 + 1e-9)


def test_ctrl_c_during_the_presolve_returns_its_incumbent(busy_spec, register, monkeypatch, ctrl_c_handled):
    """Ctrl-C lands inside the presolve, after its first incumbent (the cheapest configuration) and before its
    multiplier search: the call stops there, returns that incumbent verified, and never reaches the backend.
    The stop is sent from inside the presolve, not after a delay, so a fast presolve cannot outrun it."""
    from mdp_opt.presolve.dual import LagrangianSearch
    real_line_search = LagrangianSearch.line_search

    sent = []

    def interrupted_line_search(self, *args, **kwargs):
        if not sent:                               # once: a second Ctrl-C would land in the grace wait
            sent.append(True)
            _thread.interrupt_main()
        for _ in range(1000):                      # until the watching thread has turned Ctrl-C into the stop
            if self.deadline.expired:
                break
            time.sleep(0.01)
        return real_line_search(self, *args, **kwargs)
    monkeypatch.setattr(LagrangianSearch, "line_search", interrupted_line_search)
    called = []
    register("never-called", lambda s, b, o: called.append(s), features={"presolve"})
    with pytest.raises(mdp_opt.Interrupted) as info:
        mdp_opt.solve(busy_spec, backend="never-called")
    result = info.value.result
    assert not called
    assert result.status is Status.INTERRUPTED and result.stats["stopped_by"] == "Ctrl-C"
    assert result.has_solution and result.costs["latency"] <= result.budgets["latency"] * (1 + 1e-9)
    assert result.stats["solved_by"] == "presolve"


def test_a_backend_that_ignores_the_stop_is_abandoned_after_its_grace(register):
    """An uncooperative backend cannot hold the call: at the limit plus its grace the presolve's answer returns."""
    spec = mdp_opt.examples.make("chain", depth=8, choices=8)
    release = threading.Event()

    def stubborn(s, b, o):
        release.wait(30)
        return Answer(Status.TIME_LIMIT_NO_SOLUTION)
    register("stubborn", stubborn, features={"presolve"})
    try:
        result = mdp_opt.solve(spec, "30%", backend="stubborn", time_limit=0.3)
    finally:
        release.set()
    assert "abandoned" in result.stats["message"]
    assert result.status in (Status.FEASIBLE, Status.TIME_LIMIT_NO_SOLUTION)
    assert result.stats["solved_by"] == "presolve"


@pytest.mark.parametrize("backend", backends_with(Feature.TIME_LIMIT, Feature.PRESOLVE))
def test_at_the_time_limit_the_presolves_bound_and_incumbent_are_kept(backend, busy_spec):
    result = mdp_opt.solve(busy_spec, backend=backend, time_limit=1.0)
    assert result.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert result.bound is not None and result.bound >= result.objective


def test_the_mindtpy_worker_is_stopped_with_the_call_and_replaced(busy_spec):
    pytest.importorskip("pyomo")
    if not mdp_opt.get_backend("mindtpy").ready:
        pytest.skip("mindtpy is not set up here (run `mdp-opt setup-mindtpy`)")
    from mdp_opt.backends.mindtpy import _Worker
    result = mdp_opt.solve(busy_spec, backend="mindtpy", time_limit=0.5)
    assert result.status is Status.TIME_LIMIT_NO_SOLUTION and "time limit" in result.stats["message"]
    assert _Worker._current is None              # killed and reaped, not left running
    small = mdp_opt.examples.make("mdp-rn50-step20")
    assert mdp_opt.solve(small, backend="mindtpy").has_solution
    assert _Worker._current is not None and _Worker._current.process.poll() is None   # a new one serves


def mindtpy_workers() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "-m mdp_opt.backends.mindtpy" in line}


CLI = [sys.executable, "-m", "mdp_opt.cli"]


@pytest.mark.parametrize("backend", ["dp", "mindtpy"])
def test_ctrl_c_on_the_command_line_prints_the_answer_and_exits_130(backend):
    if not mdp_opt.get_backend(backend).ready:
        pytest.skip(f"{backend} is not ready here")
    before = mindtpy_workers()
    process = subprocess.Popen(CLI + ["solve", "--example", "resnet101", "--budget", "25%", "--backend", backend,
                                      "--json", "--option", "presolve=false"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_sigint_by_default)
    time.sleep(2.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert json.loads(out)["status"] == "interrupted"
    assert err.strip() == "mdp-opt: interrupted"           # one line, no traceback
    assert mindtpy_workers() <= before                       # no worker process left behind


def test_a_closed_pipe_ends_the_command_quietly():
    process = subprocess.Popen(CLI + ["solve", "--example", "mdp-rn50-step20", "--backend", "dp", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()                                   # like `| head` exiting at once
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert process.returncode == 141 and err == ""


def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "spec.json"
    mdp_opt.save(mdp_opt.examples.make("chain", depth=2, choices=2), spec)
    for args, field in [(["--budget", "1e400%"], "budget.latency"), (["--budget", "latency=-inf"], "budget.latency"),
                        (["--option", "threads=1000000000"], "threads"), (["--time-limit", "inf"], "time_limit"),
                        (["--option", "verbose=3"], "verbose")]:
        done = subprocess.run(CLI + ["solve", str(spec), "--backend", "cpsat", *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and field in done.stderr and "Traceback" not in done.stderr


def test_files_are_replaced_whole_never_seen_half_written(tmp_path):
    """Writers keep replacing a spec file while a reader keeps loading it: every read is a whole spec."""
    path = tmp_path / "spec.json"
    specs = [mdp_opt.examples.make("chain", depth=d, choices=8) for d in (2, 30)]
    mdp_opt.save(specs[0], path)
    stop = threading.Event()

    def write(spec):
        while not stop.is_set():
            mdp_opt.save(spec, path)
    writers = [threading.Thread(target=write, args=(s,)) for s in specs]
    for w in writers:
        w.start()
    try:
        seen = {len(mdp_opt.load(path).dims) for _ in range(300)}
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert seen <= {2, 30}
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]      # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    atomic_write_text(path, "old")

    def fail(temporary: str) -> None:
        with open(temporary, "w") as f:
            f.write("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        mdp_opt.files.atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.md"]


# ---- the fuzzer: every input gives a verified result or a SpecError naming the field ----------------------
# Long runs: MDP_OPT_FUZZ_EXAMPLES=3000 python -m pytest -q tests/test_reliability.py -k fuzz
FUZZ_EXAMPLES = int(os.environ.get("MDP_OPT_FUZZ_EXAMPLES", "60"))
FIELD = re.compile(r"^[^:\n]{1,80}: ")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs=fuzz.inputs(), backend=st.sampled_from(backends_with(ready=True)))
def test_fuzz_every_input_gives_a_verified_result_or_a_spec_error_naming_the_field(inputs, backend):
    text, budget, options = inputs
    options = {"time_limit": 30, **options}
    try:
        spec = mdp_opt.loads(text)
        result = mdp_opt.solve(spec, budget, backend=backend, **options)
    except mdp_opt.SpecError as e:
        assert FIELD.match(str(e)), str(e)
        event("SpecError: " + str(e).split(":")[0][:30])
        return
    event(f"{backend}: {result.status.value}")
    assert isinstance(result, mdp_opt.Result) and result.status in set(Status)
    if result.has_solution:
        assert all(result.costs[r] <= mdp_opt.budgets.budget_limit(b) for r, b in result.budgets.items())
    json.dumps(result.to_dict(), allow_nan=False)        # what --json prints is valid JSON


def test_the_stop_hooks_are_repeated_until_the_worker_returns():
    """A solver that misses the first stop (it had not started its search) is stopped by a later call."""
    deadline = Deadline(0.2)
    calls = []

    def work():
        with deadline.hook(lambda: calls.append(time.monotonic())):
            while len(calls) < 3:                  # like a search that only sees the third stop
                time.sleep(0.01)
        return "stopped"
    assert deadline.run(work) == "stopped"
    assert deadline.reason == "time_limit" and len(calls) >= 3

"""Mutation families for the reliability fuzzer: spec JSON texts, budgets and options a user might pass.

Each family starts from a valid input and breaks it the way real inputs break: numbers out of range,
names no backend can carry, structures nested too deep or keyed twice, budgets that are not finite,
options of the wrong type or size. `tests/test_reliability.py` asserts that each one gives a verified
result or a `SpecError` that names the field.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

import mdp_opt

BASE_SPECS = [mdp_opt.dumps(mdp_opt.examples.make("chain", depth=3, choices=3)),
              mdp_opt.dumps(mdp_opt.examples.make("resnet50", blocks=(2,), choices=2, integer=False))]

BAD_NUMBERS = ["1e308", "-1e308", "1e101", "1e-300", "5e-324", "-0.0", "Infinity", "-Infinity", "NaN", "true",
               "null", '"12"', "[]", "{}", "1" + "0" * 400, "-1", "0"]
BAD_NAMES = ['"\\ud800"', '""', '"' + "x" * 2000 + '"', "3", "null", '"\\u0000"', '"é名"']


@st.composite
def inputs(draw) -> tuple[str, object, dict]:
    """(spec text, budget, options) with one of the three broken (or none): so that most examples reach a
    backend with the other two valid."""
    broken = draw(st.sampled_from(["spec", "budget", "options", "none"]))
    text = draw(spec_texts()) if broken == "spec" else draw(st.sampled_from(BASE_SPECS))
    budget = draw(st.sampled_from(BAD_BUDGETS)) if broken == "budget" else draw(st.sampled_from(GOOD_BUDGETS))
    options = draw(st.sampled_from(BAD_OPTIONS)) if broken == "options" else {}
    return text, budget, options


@st.composite
def spec_texts(draw) -> str:
    """A spec JSON text with one mutation."""
    text = draw(st.sampled_from(BASE_SPECS))
    family = draw(st.sampled_from(["number", "name", "nesting", "duplicate", "choice", "budget"]))
    data = json.loads(text)
    if family == "number":
        number = draw(st.sampled_from(BAD_NUMBERS))
        where = draw(st.sampled_from(["objective", "costs"]))
        terms = data["objective"] if where == "objective" else data["costs"]["latency"]
        term = terms[draw(st.integers(0, len(terms) - 1))]
        marker = "__NUMBER__"
        table = term["table"]
        while isinstance(table, list) and isinstance(table[0], list):
            table = table[0]
        if isinstance(table, list):
            table[0] = marker
        else:
            term["table"] = marker
        return json.dumps(data).replace(f'"{marker}"', number)
    if family == "name":
        marker = "__NAME__"
        target = draw(st.sampled_from(["dim", "block", "resource"]))
        if target == "dim" or not data["blocks"]:
            old = data["dims"][0]["name"]
            data["dims"][0]["name"] = marker
            for _, terms in [("o", data["objective"])] + list(data["costs"].items()):
                for t in terms:
                    t["dims"] = [marker if d == old else d for d in t["dims"]]
        elif target == "block":
            old = data["blocks"][0]
            data["blocks"][0] = marker
            for terms in [data["objective"], *data["costs"].values()]:
                for t in terms:
                    if t.get("block") == old:
                        t["block"] = marker
        else:
            data["costs"] = {marker: data["costs"]["latency"]}
            data["budgets"] = {}
        return json.dumps(data).replace(f'"{marker}"', draw(st.sampled_from(BAD_NAMES)))
    if family == "nesting":
        depth = draw(st.sampled_from([33, 200, 950]))
        return text.replace('"table": ', '"table": ' + "[" * depth + "1" + "]" * depth + ', "x": ', 1)
    if family == "duplicate":
        return text.replace('"version": 1', '"version": 1, "version": 1', 1)
    if family == "choice":
        return text.replace('"choices": [', '"choices": [' + draw(st.sampled_from(BAD_NUMBERS)) + ", ", 1)
    if family == "budget":
        number = draw(st.sampled_from(BAD_NUMBERS))
        data["budgets"] = {"latency": "__B__"}
        return json.dumps(data).replace('"__B__"', number)
    return text


BAD_BUDGETS = [None, "50%", "1e400%", "-5%", "nan%", "inf%", " 50 % ", "50", "", "%", 1e308, -1.0, 0.0, 1e-300,
               float("inf"), float("nan"), True, "1e2%", {"latency": "30%"}, {"flops": 1.0}, {"latency": None},
               [], 10**400]


GOOD_BUDGETS = [None, "30%", "60%", "100%", 0.0]


BAD_OPTIONS = [
    {}, {"threads": 0}, {"threads": 10**9}, {"threads": True}, {"threads": 2.5}, {"threads": 2},
    {"time_limit": True}, {"time_limit": 0}, {"time_limit": -1}, {"time_limit": float("inf")},
    {"time_limit": float("nan")}, {"time_limit": 30}, {"resolution": 1e-300}, {"resolution": 1e300},
    {"resolution": -1}, {"resolution": "fine"}, {"resolution": True}, {"resolution": {"bogus": 1}},
    {"verbose": 3}, {"verbose": "yes"}, {"memory_cap": -5}, {"memory_cap": float("inf")}, {"hint": [1, 2]},
    {"hint": {"choice": {"nope": 0}}}, {"parameters": "x"}, {"parameters": {"no_such": 1}}, {"mip_rel_gap": -1},
    {"presolve": "no"}, {"presolve": False}, {"limit": 0}, {"iteration_limit": True}, {"bogus": 1},
]

"""Every rule of SPEC_FORMAT.md is enforced with the field named; the JSON round trip is exact."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, SpecError, Term
from strategies import specs

EXAMPLE = {
    "format": "mdp-opt.spec",
    "version": 1,
    "name": "toy-resnet",
    "dims": [{"name": "stem", "choices": [16]}, {"name": "b1.conv1", "choices": [4, 8, 12, 16]}],
    "blocks": ["b1"],
    "objective": [{"dims": ["b1.conv1"], "table": [0.9, 1.5, 1.8, 1.9], "block": "b1"}],
    "costs": {"latency": [
        {"dims": ["stem"], "table": [0.40]},
        {"dims": ["b1.conv1", "stem"], "table": [[0.10], [0.18], [0.25], [0.33]], "block": "b1"},
        {"dims": [], "table": 0.05},
    ]},
    "budgets": {"latency": 0.7},
    "meta": {"source": "free-form; ignored by solvers"},
}


def mutated(path: list, value, delete: bool = False) -> dict:
    data = copy.deepcopy(EXAMPLE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_example_from_spec_format_loads_and_round_trips():
    spec = Spec.from_dict(EXAMPLE)
    assert spec.dim_names == ("stem", "b1.conv1")
    assert spec.block_names == ("b1",)
    assert spec.to_dict() == EXAMPLE
    assert mdp_opt.loads(mdp_opt.dumps(spec)) == spec


def test_round_trip_through_a_file(tmp_path):
    spec = Spec.from_dict(EXAMPLE)
    mdp_opt.save(spec, tmp_path / "s.json")
    assert mdp_opt.load(tmp_path / "s.json") == spec


@settings(max_examples=60)
@given(specs())
def test_random_specs_round_trip_exactly(spec):
    again = mdp_opt.loads(mdp_opt.dumps(spec))
    assert again == spec
    assert again.to_dict() == spec.to_dict()


# (mutation, expected field in the message) -- one row per rule of SPEC_FORMAT.md
VIOLATIONS = [
    (mutated(["format"], "mdp-opt"), "format"),
    (mutated(["format"], None, delete=True), "format"),
    (mutated(["version"], 2), "version"),
    (mutated(["version"], True), "version"),
    (mutated(["version"], "1"), "version"),
    (mutated(["name"], 3), "name"),
    (mutated(["dims"], None, delete=True), "dims"),
    (mutated(["dims"], {"stem": [16]}), "dims"),
    (mutated(["dims", 1, "name"], "stem"), "dims[1].name"),
    (mutated(["dims", 0, "name"], ""), "dims[0].name"),
    (mutated(["dims", 0, "name"], 7), "dims[0].name"),
    (mutated(["dims", 1, "choices"], []), "dims[1].choices"),
    (mutated(["dims", 1, "choices"], [4, 4, 12, 16]), "dims[1].choices[1]"),
    (mutated(["dims", 1, "choices"], [8, 4, 12, 16]), "dims[1].choices[1]"),
    (mutated(["dims", 1, "choices"], [0, 8, 12, 16]), "dims[1].choices[0]"),
    (mutated(["dims", 1, "choices"], [-4, 8, 12, 16]), "dims[1].choices[0]"),
    (mutated(["dims", 1, "choices"], [4.0, 8, 12, 16]), "dims[1].choices[0]"),
    (mutated(["dims", 1, "choices"], [True, 8, 12, 16]), "dims[1].choices[0]"),
    (mutated(["dims", 1, "width"], 3), "dims[1].width"),
    (mutated(["blocks"], "b1"), "blocks"),
    (mutated(["blocks"], ["b1", "b1"]), "blocks[1]"),
    (mutated(["blocks"], ["b1", ""]), "blocks[1]"),
    (mutated(["blocks"], [1]), "blocks[0]"),
    (mutated(["objective", 0, "dims"], ["nope"]), "objective[0].dims[0]"),
    (mutated(["objective", 0, "dims"], ["b1.conv1", "b1.conv1"]), "objective[0].dims"),
    (mutated(["objective", 0, "table"], [0.9, 1.5, 1.8]), "objective[0].table"),
    (mutated(["objective", 0, "table"], [[0.9], [1.5], [1.8], [1.9]]), "objective[0].table"),
    (mutated(["objective", 0, "table"], 1.0), "objective[0].table"),
    (mutated(["objective", 0, "table"], [0.9, "1.5", 1.8, 1.9]), "objective[0].table"),
    (mutated(["objective", 0, "table"], [0.9, None, 1.8, 1.9]), "objective[0].table"),
    (mutated(["objective", 0, "table"], [0.9, float("nan"), 1.8, 1.9]), "objective[0].table"),
    (mutated(["objective", 0, "table"], [0.9, float("inf"), 1.8, 1.9]), "objective[0].table"),
    (mutated(["objective", 0, "table"], [0.9, 10**400, 1.8, 1.9]), "objective[0].table"),
    (mutated(["objective", 0, "table"], None, delete=True), "objective[0].table"),
    (mutated(["objective", 0, "block"], "b2"), "objective[0].block"),
    (mutated(["objective", 0, "block"], 1), "objective[0].block"),
    (mutated(["objective", 0, "weight"], 1), "objective[0].weight"),
    (mutated(["objective"], {}), "objective"),
    (mutated(["costs", "latency", 1, "table"], [[0.10], [0.18], [0.25]]), "costs.latency[1].table"),
    (mutated(["costs", "latency", 1, "table"], [[0.10], [0.18], [0.25, 0.3], [0.33]]), "costs.latency[1].table"),
    (mutated(["costs", "latency", 0, "table"], [-0.4]), "costs.latency[0].table"),
    (mutated(["costs", "latency", 2, "table"], [0.05]), "costs.latency[2].table"),
    (mutated(["costs", "latency"], {}), "costs.latency"),
    (mutated(["costs"], []), "costs"),
    (mutated(["budgets"], {"flops": 3}), "budgets.flops"),
    (mutated(["budgets"], {"latency": "50%"}), "budgets.latency"),
    (mutated(["budgets"], {"latency": float("nan")}), "budgets.latency"),
    (mutated(["budgets"], [0.7]), "budgets"),
    (mutated(["meta"], "x"), "meta"),
    (mutated(["notes"], "typo'd key"), "notes"),
]


@pytest.mark.parametrize("data,field", VIOLATIONS, ids=[f for _, f in VIOLATIONS])
def test_each_rule_is_enforced_with_the_field_named(data, field):
    with pytest.raises(SpecError) as info:
        Spec.from_dict(json.loads(json.dumps(data)) if _json_safe(data) else data)
    assert str(info.value).startswith(field), str(info.value)


def _json_safe(data) -> bool:
    try:
        json.dumps(data, allow_nan=False)
        return True
    except (ValueError, OverflowError):
        return False


def test_shape_message_names_dims_and_choice_counts():
    spec_dims = (Dim("a", (1, 2, 3, 4)), Dim("b", (1, 2, 3)))
    with pytest.raises(SpecError, match=r"objective\[0\]\.table: shape \(4, 2\) does not match dims \('a', 'b'\) "
                                        r"with choices 4 x 3"):
        Spec(dims=spec_dims, objective=(Term(("a", "b"), np.zeros((4, 2))),), costs={})


def test_python_construction_is_validated_like_json():
    with pytest.raises(SpecError, match=r"costs\.latency\[0\]\.table: cost entries must be >= 0"):
        Spec(dims=(Dim("a", (1, 2)),), objective=(), costs={"latency": (Term(("a",), [1.0, -1.0]),)})
    with pytest.raises(SpecError, match=r"dims\[0\]\.choices\[1\]"):
        Spec(dims=(Dim("a", (2, 1)),), objective=(), costs={})
    with pytest.raises(SpecError, match=r"objective\[0\]\.block: unknown block 'x'"):
        Spec(dims=(Dim("a", (1,)),), objective=(Term(("a",), [1.0], "x"),), costs={})


def test_spec_is_immutable():
    spec = Spec.from_dict(EXAMPLE)
    with pytest.raises(AttributeError):
        spec.name = "x"
    with pytest.raises(ValueError):
        spec.objective[0].table[0] = 5.0
    with pytest.raises(TypeError):
        spec.budgets["latency"] = 1.0


def test_loader_reports_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        mdp_opt.load(bad)
    with pytest.raises(SpecError, match="cannot read"):
        mdp_opt.load(tmp_path / "missing.json")


def _json_values(depth: int = 3):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 20), st.floats(allow_nan=True),
                        st.text(max_size=4), st.sampled_from(["a", "b1", "stem", "latency", "mdp-opt.spec"]))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
            ["name", "choices", "dims", "table", "block", "latency", "x"]), inner, max_size=3)), max_leaves=12)


@st.composite
def mutated_example(draw):
    """The example with one random node replaced by random JSON, or a key deleted."""
    data = copy.deepcopy(EXAMPLE)
    node = data
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(_json_values())
        break
    return data


@settings(max_examples=300)
@given(st.one_of(mutated_example(), _json_values()))
def test_fuzzed_json_gives_a_spec_or_a_spec_error_never_another_exception(data):
    try:
        text = json.dumps(data)
    except (ValueError, OverflowError):
        return
    try:
        spec = mdp_opt.loads(text)
    except SpecError:
        return
    assert mdp_opt.loads(mdp_opt.dumps(spec)) == spec


def test_importance_table_sums_the_top_k_scores():
    table = mdp_opt.importance_table([0.1, 0.5, 0.2, 0.4], [1, 2, 4])
    np.testing.assert_allclose(table, [0.5, 0.9, 1.2])
    with pytest.raises(SpecError, match="exceeds the 4 scores"):
        mdp_opt.importance_table([0.1, 0.5, 0.2, 0.4], [1, 5])
    with pytest.raises(SpecError, match="choices"):
        mdp_opt.importance_table([0.1], [0])


def test_full_costs_are_the_unpruned_configuration():
    spec = Spec.from_dict(EXAMPLE)
    assert spec.full_costs() == pytest.approx({"latency": 0.40 + 0.33 + 0.05})
    with pytest.raises(SpecError, match="resource 'flops'"):
        spec.full_cost("flops")


# ---- what the math needs: checked once, named in the error ------------------------------------------------

@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["objective"][0].update(table=[1e101, 1.5, 1.8, 1.9]), r"objective\[0\]\.table entry: 1e\+101 is too large"),
    (lambda d: d["objective"][0].update(table=[1e-300, 1.5, 1.8, 1.9]), r"objective\[0\]\.table entry: 1e-300 is too small"),
    (lambda d: d["dims"][1].update(choices=[4, 8, 12, 10**400]), r"dims\[1\]\.choices\[3\]: kept count"),
    (lambda d: d["dims"][0].update(name="\ud800"), r"dims\[0\]\.name: .* lone surrogate"),
    (lambda d: d["dims"][0].update(name="x" * 1001), r"dims\[0\]\.name: name of 1001 characters"),
    (lambda d: d.update(blocks=["\ud800"]), r"blocks\[0\]: .* lone surrogate"),
    (lambda d: d.update(budgets={"latency": 1e200}), r"budgets\.latency: 1e\+200 is too large"),
])
def test_numbers_and_names_beyond_what_the_math_needs_are_refused(mutate, field):
    data = copy.deepcopy(EXAMPLE)
    mutate(data)
    with pytest.raises(SpecError, match="^" + field):
        mdp_opt.loads(json.dumps(data))


def test_duplicate_keys_and_non_numbers_in_the_json_text_are_refused():
    text = json.dumps(EXAMPLE)
    with pytest.raises(SpecError, match="^version: the key appears twice"):
        mdp_opt.loads(text.replace('"version": 1', '"version": 1, "version": 1'))
    with pytest.raises(SpecError, match="^NaN: not a JSON number"):
        mdp_opt.loads(text.replace('"latency": 0.7', '"latency": NaN'))
    deep_first = text.replace('"table": [0.9', '"table": [' + "[" * 950 + "1" + "]" * 950 + ", 0.9")
    with pytest.raises(SpecError, match=r"^objective\[0\]\.table: lists nested more than 32 deep"):
        mdp_opt.loads(deep_first)
    deep_later = text.replace('"table": [0.9', '"table": [0.9, ' + "[" * 950 + "1" + "]" * 950)
    with pytest.raises(SpecError, match=r"^objective\[0\]\.table: a ragged nested list"):
        mdp_opt.loads(deep_later)


def test_file_and_table_size_limits_have_overrides(tmp_path):
    path = tmp_path / "spec.json"
    mdp_opt.save(Spec.from_dict(EXAMPLE), path)
    size = path.stat().st_size
    with pytest.raises(SpecError, match=r"bytes, over the limit of 10; pass max_bytes="):
        mdp_opt.load(path, max_bytes=10)
    with pytest.raises(SpecError, match=r"more entries in all than max_entries allows"):
        mdp_opt.load(path, max_entries=5)
    assert mdp_opt.load(path, max_bytes=size, max_entries=100) == Spec.from_dict(EXAMPLE)


def test_budgets_must_be_finite_numbers_within_range():
    spec = Spec.from_dict(EXAMPLE)
    for bad in ("1e400%", "inf%", float("inf"), 10**400, 1e200, "nan%"):
        with pytest.raises(SpecError, match="^budget.latency: "):
            mdp_opt.resolve_budgets(spec, bad)
    assert mdp_opt.resolve_budgets(spec, "1e-400%") == {"latency": 0.0}

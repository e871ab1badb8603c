"""The marginal (RLT) linearisation that the cpsat, milp and mindtpy (marginal) backends share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_opt.evaluate import evaluate
from mdp_opt.linear_model import build
from strategies import specs


@settings(max_examples=60, deadline=None)
@given(spec=specs(), data=st.data())
def test_linear_model_is_exact_on_every_configuration(spec, data):
    """The 0/1 point of any configuration satisfies every row, and objective and costs match `evaluate`."""
    choice = {d.name: data.draw(st.integers(0, d.size - 1)) for d in spec.dims}
    active = {b: data.draw(st.booleans()) for b in spec.block_names}
    model = build(spec, {r: 0.0 for r in spec.costs})
    x = model.values(choice, active)
    for index, coef, lower, upper in model.rows():
        assert lower - 1e-12 <= coef @ x[index] <= upper + 1e-12
    ev = evaluate(spec, choice, active)
    assert model.objective.value(x) == pytest.approx(ev.value, rel=1e-12, abs=1e-12)
    for r, cost in model.costs.items():
        assert cost.value(x) == pytest.approx(ev.costs[r], rel=1e-12, abs=1e-12)
    assert model.decode(x) == (choice, active)
    for family in model.families:
        assert x[family.index].sum() <= 1

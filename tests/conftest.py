"""Shared fixtures: the hypothesis profile, the shipped real instances, and a registry for test backends."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import mdp_opt
from mdp_opt import backend as backend_module

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(params=mdp_opt.examples.INSTANCES)
def instance(request):
    """(name, spec, proven optimum) of each real instance shipped in mdp_opt/examples/instances."""
    name = request.param
    return name, mdp_opt.examples.instance(name), mdp_opt.examples.PROVEN_OPTIMA[name]


@pytest.fixture
def register(monkeypatch):
    """`mdp_opt.register_backend` for backends that exist during one test only."""
    monkeypatch.setattr(backend_module, "_REGISTRY", dict(backend_module._REGISTRY))
    return mdp_opt.register_backend

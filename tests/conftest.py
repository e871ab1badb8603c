"""Shared fixtures: where the real instances live (../shared beside the clone), hypothesis profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

SHARED = Path(os.environ.get("MDP_OPT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
INSTANCES = SHARED / "instances"
INSTANCE_OPTIMA = {
    "mdp-rn101-step00": 3350920,
    "mdp-rn50-step10": 6908411,
    "mdp-rn50-step20": 6516229,
    "mdp-mbv1-2nd-step00": 4189641,
}


@pytest.fixture(params=sorted(INSTANCE_OPTIMA))
def instance(request):
    """(path, proven optimum) of each real instance; skipped where ../shared is absent."""
    path = INSTANCES / f"{request.param}.json"
    if not path.exists():
        pytest.skip(f"real instance {path} absent (../shared/instances is not beside this clone)")
    return path, INSTANCE_OPTIMA[request.param]

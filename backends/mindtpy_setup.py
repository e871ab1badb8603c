"""`mdp-opt setup-mindtpy`: install, build and check what the `mindtpy` backend needs.

The stack, all from PyPI and Debian (no IPOPT executable installs offline):
1. PyPI `pyomo`, `highspy` (MILP solver `appsi_highs`), `scipy` (PyNumero's cyipopt interface
   imports it) and `packaging` (without it PyNumero wrongly reports numpy missing);
2. the NLP solver `cyipopt`: PyPI `cyipopt-wheels` (bundles IPOPT), else Debian
   `coinor-libipopt-dev liblapack-dev libblas-dev pkg-config` plus PyPI `cyipopt`;
3. Pyomo's PyNumero library (cyipopt's bridge to Pyomo models), built against Debian
   `libamplsolver-dev` with `python -m pyomo.contrib.pynumero.build` into `PYOMO_CONFIG_DIR`
   (default ~/.pyomo); the build needs cmake and a C++ compiler.
Every step is skipped when its result is already present, so running it twice is harmless.
`--check` only reports. The core never imports this module at import time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

# module -> (PyPI requirement, oldest version that works: MindtPy accepts appsi_highs from Pyomo 6.8)
PIP_PACKAGES = {"pyomo": ("pyomo>=6.8", (6, 8)), "highspy": ("highspy>=1.7", (1, 7)), "scipy": ("scipy", (0,)),
                "packaging": ("packaging", (0,))}
CYIPOPT_WHEEL = "cyipopt-wheels"
IPOPT_DEBIAN = ("coinor-libipopt-dev", "liblapack-dev", "libblas-dev", "pkg-config")
ASL_DEBIAN = "libamplsolver-dev"
BUILD_TOOLS = {"cmake": "cmake", "c++": "g++", "make": "make"}  # executable -> Debian package


def stack_problems(mip_solver: str = "appsi_highs", nlp_solver: str = "cyipopt") -> list[str]:
    """What keeps MindtPy from running with these sub-solvers (empty when everything is there)."""
    problems = []
    if not _recent_enough("pyomo"):
        return ["Pyomo >= 6.8 is not installed"]
    if importlib.util.find_spec("packaging") is None:
        problems.append("the Python module 'packaging' is missing (PyNumero needs it)")
    if not _solver_available(mip_solver):
        problems.append(f"MILP solver {mip_solver!r} is not available"
                        + (" (PyPI highspy)" if mip_solver == "appsi_highs" else ""))
    if nlp_solver == "cyipopt":
        if importlib.util.find_spec("cyipopt") is None:
            problems.append("NLP solver 'cyipopt' is not installed (PyPI cyipopt-wheels)")
        if importlib.util.find_spec("scipy") is None:
            problems.append("the Python module 'scipy' is missing (Pyomo's cyipopt interface needs it)")
        if not _pynumero_built():
            problems.append(f"Pyomo's PyNumero ASL library is not built (looked in {_pyomo_config_dir()})")
    elif not _solver_available(nlp_solver):
        problems.append(f"NLP solver {nlp_solver!r} is not available")
    return problems


def _solver_available(name: str) -> bool:
    import pyomo.environ as pyo
    try:
        return bool(pyo.SolverFactory(name).available(exception_flag=False))
    except Exception:  # an unknown name or a broken plugin: not usable either way
        return False


def _pynumero_built() -> bool:
    from pyomo.contrib.pynumero.asl import AmplInterface
    return bool(AmplInterface.available())


def _pyomo_config_dir() -> str:
    if importlib.util.find_spec("pyomo") is None:
        return os.environ.get("PYOMO_CONFIG_DIR", str(Path.home() / ".pyomo"))
    from pyomo.common import envvar
    return str(envvar.PYOMO_CONFIG_DIR)


# ---- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--check", action="store_true", help="only report what is present and what is missing")
    parser.add_argument("--no-apt", action="store_true",
                        help="never call apt-get; print the Debian packages to install instead")


def run(args: argparse.Namespace) -> int:
    if args.check:
        return _report()
    steps = [_pip_packages, _cyipopt, _pynumero]
    for step in steps:
        if not step(apt=not args.no_apt):
            print("setup-mindtpy: stopped; fix the step above and run `mdp-opt setup-mindtpy` again")
            return 1
    # Check in a fresh interpreter: this one has cached the imports from before the install.
    return subprocess.call([sys.executable, "-m", "mdp_opt.cli", "setup-mindtpy", "--check"])


def _report() -> int:
    problems = stack_problems()
    print(f"python        {sys.executable}")
    for module in (*PIP_PACKAGES, "cyipopt"):
        print(f"{module:13s} {_module_version(module)}")
    print(f"PyNumero ASL  {'built' if importlib.util.find_spec('pyomo') and _pynumero_built() else 'missing'}"
          f" ({_pyomo_config_dir()})")
    if problems:
        print("mindtpy backend: NOT ready: " + "; ".join(problems) + ". Run `mdp-opt setup-mindtpy`.")
        return 1
    print("mindtpy backend: ready (mip_solver appsi_highs, nlp_solver cyipopt)")
    return 0


def _module_version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "missing"
    try:
        version = getattr(importlib.import_module(module), "__version__", None)
        return str(version or importlib.metadata.version(module))
    except Exception as e:  # present but broken (e.g. a missing shared library)
        return f"broken ({type(e).__name__}: {e})"


def _recent_enough(module: str) -> bool:
    """Installed, at PIP_PACKAGES' oldest working version or later."""
    try:
        version = importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return False
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    return numbers >= PIP_PACKAGES[module][1]


def _pip_packages(apt: bool) -> bool:
    missing = [requirement for module, (requirement, _) in PIP_PACKAGES.items() if not _recent_enough(module)]
    if not missing:
        print(f"[1/3] {', '.join(PIP_PACKAGES)}: present")
        return True
    print(f"[1/3] installing {' '.join(missing)} from PyPI")
    return _pip(*missing)


def _cyipopt(apt: bool) -> bool:
    if _cyipopt_imports():
        print("[2/3] cyipopt: present")
        return True
    print(f"[2/3] installing {CYIPOPT_WHEEL} (cyipopt with IPOPT bundled) from PyPI")
    if _pip(CYIPOPT_WHEEL) and _cyipopt_imports():
        return True
    print(f"[2/3] {CYIPOPT_WHEEL} did not give a working cyipopt; building cyipopt against Debian's IPOPT")
    if not _apt(IPOPT_DEBIAN, apt):
        return False
    return _pip("cyipopt") and _cyipopt_imports()


def _cyipopt_imports() -> bool:
    return subprocess.call([sys.executable, "-c", "import cyipopt"], stderr=subprocess.DEVNULL) == 0


def _pynumero(apt: bool) -> bool:
    built = subprocess.call([sys.executable, "-c", "import sys; from pyomo.contrib.pynumero.asl import "
                             "AmplInterface; sys.exit(0 if AmplInterface.available() else 1)"],
                            stderr=subprocess.DEVNULL) == 0
    if built:
        print(f"[3/3] PyNumero ASL library: present in {_pyomo_config_dir()}")
        return True
    tools = [package for exe, package in BUILD_TOOLS.items() if shutil.which(exe) is None]
    if not _apt((ASL_DEBIAN, *tools), apt):
        return False
    include, library = _asl_paths()
    if include is None or library is None:
        print(f"[3/3] cannot find asl.h and libamplsolver.so in `dpkg -L {ASL_DEBIAN}`")
        return False
    print(f"[3/3] building PyNumero against {library} into {_pyomo_config_dir()} (about a minute)")
    return _run([sys.executable, "-m", "pyomo.contrib.pynumero.build",
                 f"-DASL_INCLUDE_DIR={include}", f"-DASL_LIBRARY={library}"])


def _asl_paths() -> tuple[str | None, str | None]:
    """(header folder, shared library) of Debian's libamplsolver-dev."""
    listing = subprocess.run(["dpkg", "-L", ASL_DEBIAN], capture_output=True, text=True).stdout.split()
    include = next((str(Path(p).parent) for p in listing if p.endswith("/asl.h")), None)
    library = next((p for p in listing if p.endswith("/libamplsolver.so")), None)
    return include, library


def _apt(packages: Sequence[str], allowed: bool) -> bool:
    """Install Debian packages that are not installed yet."""
    missing = [p for p in packages
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return True
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not allowed or shutil.which("apt-get") is None or os.geteuid() != 0:
        print(f"      needs Debian packages: {' '.join(missing)}; as root run:\n"
              f"      apt-get update && {' '.join(command)}")
        return False
    print(f"      installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return _run(["apt-get", "update", "-q"], env) and _run(command, env)


def _pip(*packages: str) -> bool:
    return _run([sys.executable, "-m", "pip", "install", *packages])


def _run(command: Sequence[str], env: dict[str, str] | None = None) -> bool:
    print("      $ " + " ".join(command), flush=True)
    code = subprocess.call(list(command), env=env)
    if code != 0:
        print(f"      failed with exit code {code}")
    return code == 0

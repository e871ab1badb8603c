"""`mdp-opt setup-mindtpy`: the mindtpy backend's set-up, which lives with that backend."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..backends import mindtpy_setup
    mindtpy_setup.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..backends import mindtpy_setup
    return mindtpy_setup.run(args)

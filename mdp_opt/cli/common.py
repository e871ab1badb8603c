"""What the subcommands share: reading a spec, budgets and options from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from ..spec import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Spec, load


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC", help="spec JSON file (see the spec format in the README)")
    parser.add_argument("--example", metavar="NAME",
                        help="a spec shipped with mdp_opt.examples instead of a file: a real instance "
                             "(mdp-rn50-step10, mdp-rn101-step00, ...) or a generated one (resnet50, vit12, ...)")
    parser.add_argument("--max-spec-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                        help=f"refuse larger spec files (default {DEFAULT_MAX_BYTES:,})")
    parser.add_argument("--max-spec-entries", type=int, default=DEFAULT_MAX_ENTRIES, metavar="N",
                        help=f"refuse specs whose tables hold more entries in all (default {DEFAULT_MAX_ENTRIES:,})")


def spec_from_args(args: argparse.Namespace) -> Spec:
    """The spec named by SPEC or --example."""
    if getattr(args, "example", None):
        from .. import examples
        return examples.make(args.example)
    if not getattr(args, "spec", None):
        raise UsageError("SPEC: give a spec file, or --example NAME for a shipped one")
    return load(args.spec, max_bytes=args.max_spec_bytes, max_entries=args.max_spec_entries)


def parse_budget(items: Sequence[str] | None) -> Any:
    """`--budget 50%`, `--budget latency=120`, `--budget latency=50% --budget params=2e6`."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        resource, sep, value = item.rpartition("=")
        if not sep:
            if len(items) > 1:
                raise UsageError(f"--budget {item}: with several budgets, write each as RESOURCE=VALUE")
            return number_or_percent(value, "--budget")
        out[resource] = number_or_percent(value, f"--budget {resource}")
    return out


def number_or_percent(text: str, what: str) -> Any:
    if text.strip().endswith("%"):
        return text.strip()
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is neither a number nor a percentage like 50%") from None


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """`--option threads=2 --option presolve=false`: values parsed as JSON where they parse."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {item}: write it as KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

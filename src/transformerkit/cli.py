"""The ``transformerkit`` command line.

    transformerkit model-info --preset base [--vocab-size N] [--set key=value …] [--json]

Errors in what the user typed (unknown keys, bad values, unknown presets) end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

import torch

from transformerkit.config import PRESETS, TransformerConfig, parse_value, preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer


class UsageError(Exception):
    """A mistake in the command line or its values; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["d_model=256", "positional=learned"]`` → typed values for :class:`TransformerConfig`."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = parse_value(key.strip(), text.strip())
    return overrides


def build_config(args: argparse.Namespace) -> TransformerConfig:
    overrides = parse_overrides(args.set)
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    return preset(args.preset, **overrides)


def model_info(args: argparse.Namespace) -> int:
    config = build_config(args)
    with torch.device("meta"):  # shapes only: no memory for the weights, even for `big`
        model = EncoderDecoderTransformer(config)
    counts = model.parameter_counts()
    if args.json:
        print(json.dumps({"preset": args.preset, "config": config.to_dict(), "parameters": counts["total"],
                          "parameters_by_part": {k: v for k, v in counts.items() if k != "total"}}))
        return 0
    print(f"preset: {args.preset}")
    width = max(len(k) for k in config.to_dict())
    for key, value in config.to_dict().items():
        print(f"  {key:<{width}}  {value}")
    print("parameters:")
    for part, count in counts.items():
        print(f"  {part:<{width}}  {count:>13,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transformerkit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("model-info", help="print a configuration and its exact parameter count")
    info.add_argument("--preset", default="base", help=f"one of: {', '.join(PRESETS)} (default: base)")
    info.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (shared source/target)")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set d_k=32 (repeatable)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=model_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except (UsageError, ValueError) as error:
        print(f"transformerkit: error: {error}", file=sys.stderr)
        return 2

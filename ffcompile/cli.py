"""The `ffcompile` command.

    ffcompile dump MODEL [--format text|dot|python] [--train] [--batch N] [--after PASS|all]
    ffcompile list

MODEL is a zoo name (`ffcompile list`) or a Python file defining `model`,
`example_inputs()` and, for --train, `loss(params, x, y)` (docs/cli.md).
Subcommands are registered in `build_parser`, one function each.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from types import ModuleType

from . import zoo
from .api import compile, value_and_grad

FORMATS = ("text", "dot", "python")


class TargetError(Exception):
    """MODEL names neither a zoo entry nor a usable model file."""


def load_model_file(path: str) -> ModuleType:
    """Import a model file and check it follows the convention of docs/cli.md."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [name for name in ("model", "example_inputs") if not callable(getattr(module, name, None))]
    if missing:
        raise TargetError(f"{path}: a model file must define {' and '.join(missing)} (see docs/cli.md)")
    return module


def resolve(target: str):
    """A zoo workload or a loaded model file: both have model, example_inputs() and loss."""
    if target in zoo.names():
        return zoo.get(target)
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise TargetError(f"model file {target!r} does not exist")
        return load_model_file(target)
    raise TargetError(f"unknown model {target!r}: not a zoo entry ({', '.join(zoo.names())}) "
                      "nor a .py file")


def _inputs(target, batch: int | None) -> tuple:
    # Zoo entries trace on placeholder weights: dumping `wide` draws no 100 MB of parameters.
    if isinstance(target, zoo.Workload):
        return target.placeholder_inputs(batch)
    if batch is not None:
        return target.example_inputs(batch_size=batch)
    return target.example_inputs()


def _forward(target):
    def forward(params, x):
        return target.model(params, *x) if isinstance(x, tuple) else target.model(params, x)

    return forward


def cmd_dump(args) -> int:
    target = resolve(args.model)
    params, x, y = _inputs(target, args.batch)
    after = None if args.after is None else ("all" if args.after == "all" else args.after.split(","))
    if args.train:
        loss = getattr(target, "loss", None)
        if not callable(loss):
            raise TargetError(f"{args.model}: --train needs a loss(params, x, y) function")
        lowered = compile(value_and_grad(loss), dump_after=after).lower(params, x, y)
    else:
        lowered = compile(_forward(target), dump_after=after).lower(params, x)
    if after is not None:
        # Each dump parses back on its own; the `//` headers are IR comments.
        for name, text in lowered.dumps:
            sys.stdout.write(f"// ---- after {name}\n{text}")
        return 0
    if args.format == "text":
        sys.stdout.write(lowered.ir)
    elif args.format == "dot":
        sys.stdout.write(lowered.graph.to_dot())
    else:
        sys.stdout.write(lowered.source)
    return 0


def cmd_list(args) -> int:
    width = max(len(n) for n in zoo.names())
    for name in zoo.names():
        w = zoo.get(name)
        print(f"{name:<{width}}  batch {w.batch_size:<4} {w.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffcompile", description="A compiler for deep feedforward networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dump = commands.add_parser("dump", help="print the IR (or DOT, or generated NumPy code) of a model")
    dump.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    dump.add_argument("--format", choices=FORMATS, default="text",
                      help="text: the traced IR; dot: Graphviz; python: the NumPy backend's code")
    dump.add_argument("--train", action="store_true", help="dump value_and_grad of the loss (forward + adjoint)")
    dump.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    dump.add_argument("--after", metavar="PASS", default=None,
                      help="print the IR after each named pass (comma-separated) or 'all', numbered in order")
    dump.set_defaults(run=cmd_dump)

    listing = commands.add_parser("list", help="list the zoo models")
    listing.set_defaults(run=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch", None) is not None and args.batch < 1:
        parser.error(f"--batch must be positive, got {args.batch}")
    try:
        return args.run(args)
    except (TargetError, ValueError) as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())

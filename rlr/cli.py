"""The `rlr` command: one subcommand per job (`rlr --help` lists them).

Subcommands are declared in rlr.commands, which imports only the standard library, and each
command's module is imported only when it runs, so help is instant. A user's mistake (a
config typo, a bad value, a malformed data line, a missing file) prints one line,
`rlr CMD: error: ...`, and exits with status 2; set RLR_DEBUG=1 to see the traceback. A fault
inside rlr or a library keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from rlr.commands import BY_NAME, COMMANDS, Command

# Kept for callers that list subcommands: name -> module that runs it.
SUBCOMMANDS: dict[str, str] = {command.name: command.module for command in COMMANDS}
USAGE_ERROR = 2
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="rlr",
        description="PPO for LLM math reasoning with PRM step rewards refined by Clip and Delta.",
        epilog="Run `rlr COMMAND --help` for a command's options. RLR_DEBUG=1 shows tracebacks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.add_arguments(sub)
    return parser


def config_class(command: Command) -> type | None:
    """The config dataclass of a config-driven command (None for the others)."""
    if command.config is None:
        return None
    module, _, name = command.config.partition(":")
    return getattr(importlib.import_module(module), name)


def load_run_config(command: Command, args: argparse.Namespace) -> Any:
    """Resolves, loads and validates the config a command's arguments name."""
    from rlr import configs
    from rlr.config_loading import load_config

    name, overrides = command.config_source(args)
    return load_config(config_class(command), configs.resolve(name), overrides)


def run(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` and runs the command; errors propagate (see `main` for the CLI's handling).

    This is also how `rlr reproduce` runs its stages: the same command lines a user would type.
    """
    args = build_parser().parse_args(argv)
    command = BY_NAME[args.command]
    if config_class(command) is not None:
        config = load_run_config(command, args)
        if args.print_config:
            from rlr.config_loading import config_yaml

            print(config_yaml(config), end="")
            return 0
        args.run_config = config
    return int(importlib.import_module(command.module).run(args) or 0)


def is_user_error(err: BaseException) -> bool:
    """Whether an exception reports a user's mistake rather than a fault in rlr or a library:
    an OSError (a missing or unreadable file), or a ValueError that rlr raised itself (rlr
    checks configs, flags and data and says what is wrong). A ValueError from inside JAX or
    another library is a fault and keeps its traceback."""
    if isinstance(err, OSError):
        return True
    if not isinstance(err, ValueError):
        return False
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return False
    origin = pathlib.Path(frame.tb_frame.f_code.co_filename).resolve()
    return PACKAGE_DIR in origin.parents


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rlr` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except (ValueError, OSError) as err:
        if os.environ.get("RLR_DEBUG") or not is_user_error(err):
            raise
        name = argv[0] if argv and argv[0] in BY_NAME else ""
        prog = f"rlr {name}".strip()
        message = " ".join(str(err).split()) or type(err).__name__
        from rlr.data.readers import FIX_HINT

        # training commands read their data whole: the reader's Python argument is no option
        message = message.replace(FIX_HINT, "fix the line")
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())

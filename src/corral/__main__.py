"""The ``corral`` command line (``python -m corral ...``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import corral

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral supervises the concurrent work of a Python service.",
    )
    parser.add_argument(
        "--version", action="version", version=f"corral {corral.__version__}",
        help="print corral's version and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a small supervised service and narrate what corral does",
        description=(
            "Run a small service under a corral.Supervisor: restarts with backoff, a "
            "bounded group, dependencies, a replaced task, a singleton that runs in one "
            "demo process at a time (start two: the other says who leads), its tree as "
            "it changes. Stops after --duration seconds, or on Ctrl-C / SIGTERM."
        ),
    )
    demo.add_argument(
        "--duration", type=_seconds, default=8.0, metavar="SECONDS",
        help="stop after this many seconds (default: 8)",
    )
    demo.add_argument(
        "--coordinator", metavar="DIR_OR_URL", default=None,
        help=(
            "where the leader's lease lives: a directory (file locks, one host) or a "
            "redis:// URL, used with a 2 s ttl (default: $CORRAL_COORDINATOR, else a "
            "per-user directory)"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import demo_coordinator, run_demo

        # corral logs restarts at WARNING and failures at ERROR (with tracebacks) on
        # the "corral" logger; the demo's hooks narrate them, so keep only the errors.
        logging.getLogger("corral").setLevel(logging.ERROR)
        try:
            # A bad --coordinator (or CORRAL_COORDINATOR), an unreachable Redis, or the
            # redis package missing: one line, not a traceback.
            leases = demo_coordinator(args.coordinator)
        except (corral.CoordinatorError, ValueError, ImportError) as e:
            print(f"corral demo: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C before the supervisor took over the signals
            return 130
        try:
            return run_demo(args.duration, coordinator=leases)
        except corral.CoordinatorError as e:
            print(f"corral demo: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C before the supervisor took over the signals
            return 130
        finally:
            leases.close()  # (Redis: its connections)
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

"""The `bgpnet` command line: `main(argv) -> exit status`; errors map to exit codes here and only here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bgpnet.errors import BgpnetError

# Each module adds its own subcommands with `register(subparsers)`; handlers take args and return a status.
COMMAND_MODULES = (
    "bgpnet.agent_cli",
    "bgpnet.lab.cli",
    "bgpnet.ipam.cli",
    "bgpnet.felix.cli",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bgpnet", description="BGP-routed Kubernetes networking agent")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BgpnetError as e:
        print(f"bgpnet: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


def main_entry() -> None:
    sys.exit(main())

"""`paperbricks prefixquant ...`: the package's subcommands (registered as an entry point)."""

from __future__ import annotations

import argparse


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-prefixquant {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks prefixquant` parser."""
    sub = parser.add_subparsers(dest="prefixquant_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

"""Subcommands of this stage group (filled in as the stage lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``lthash`` parser."""

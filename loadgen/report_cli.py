"""``loadgen report``: registered from loadgen.report.cli (loadgen/cli.py imports this name)."""

from loadgen.report.cli import register  # noqa: F401

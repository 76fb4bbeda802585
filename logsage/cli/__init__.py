"""The `logsage` command line: the Click group (`main`) and one thin module per command."""

from logsage.cli.main import cli

__all__ = ["cli"]

"""`python -m logsage` runs the CLI."""

from logsage.cli.main import cli

if __name__ == "__main__":  # pragma: no cover
    cli()

"""`python -m openmaas …` runs the CLI."""

from openmaas.cli.main import app

app()

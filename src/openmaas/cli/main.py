"""The `openmaas` command: its groups and commands, each defined in the module of its group."""

from __future__ import annotations

import typer

from openmaas.cli import admin, datasets, inference, jobs, models, platform
from openmaas.cli.common import CalmGroup
from openmaas.cli.serve import serve

app = typer.Typer(
    cls=CalmGroup,
    help="OpenMaaS: datasets → training jobs → models → predictions.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a bug's traceback must never print a key held in a local
)
app.command()(serve)
app.add_typer(datasets.app, name="datasets")
app.command()(jobs.train)
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(platform.files_app, name="files")
app.add_typer(platform.fine_tune_app, name="fine-tune")
app.add_typer(platform.batches_app, name="batches")
app.command()(inference.predict)
app.command()(inference.chat)
app.command()(inference.complete)
app.command()(inference.embed)
app.add_typer(admin.tenants_app, name="tenants")
app.add_typer(admin.keys_app, name="keys")
app.command()(admin.usage)
app.command()(admin.audit)

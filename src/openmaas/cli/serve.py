"""`openmaas serve`: start the server (the one command that builds the app rather than calling it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.output import err


def serve(
    host: Annotated[str, typer.Option(envvar="OPENMAAS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OPENMAAS_PORT")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Defaults to $OPENMAAS_DATA_DIR or ./data.")] = None,
    log_level: str = "info",
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="API processes answering on the one port; above 1 needs OPENMAAS_REDIS_URL."),
    ] = 1,
) -> None:
    """Start the server (embedded default: SQLite and local files under the data directory)."""
    import uvicorn
    from pydantic import ValidationError

    from openmaas.api import workers as several
    from openmaas.api.app import create_app
    from openmaas.api.connections import protocol_class
    from openmaas.config import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # a clear line per setting, not a traceback
        for problem in error.errors():
            message = problem["msg"].removeprefix("Value error, ")
            if problem["loc"]:
                setting = "OPENMAAS_" + "_".join(str(part) for part in problem["loc"]).upper()
                err.print(f"[red]invalid setting {setting}[/red]: {message}", soft_wrap=True)
            else:  # a rule between settings names them itself
                err.print(f"[red]invalid settings[/red]: {message}", soft_wrap=True)
        raise typer.Exit(2) from None
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "log_level": log_level,
        "access_log": False,
    }
    if workers == 1:
        app = create_app(settings)
        uvicorn.run(app, http=protocol_class(several.connection_limits(settings)), **options)
        return
    if (why := several.refusal(settings, workers)) is not None:
        err.print(f"[red]{why}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    # uvicorn binds the port here and hands the socket to each worker it spawns; they build their settings
    # from this environment, with the options given on the command line.
    os.environ.update(
        OPENMAAS_HOST=host, OPENMAAS_PORT=str(port), OPENMAAS_DATA_DIR=str(settings.data_dir.resolve())
    )
    several.prepare(settings)
    uvicorn.run(several.APP_FACTORY, factory=True, workers=workers, http=several.HTTP_PROTOCOL, **options)

"""`openmaas serve`: start the server (the one command that builds the app rather than calling it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.output import err


def serve(
    host: Annotated[str, typer.Option(envvar="OPENMAAS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OPENMAAS_PORT")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Defaults to $OPENMAAS_DATA_DIR or ./data.")] = None,
    log_level: str = "info",
) -> None:
    """Start the server (embedded default: SQLite and local files under the data directory)."""
    import uvicorn
    from pydantic import ValidationError

    from openmaas.api.app import create_app
    from openmaas.api.connections import ConnectionLimits, protocol_class
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
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_class(
            ConnectionLimits(
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                header_timeout_s=settings.header_timeout_s,
                body_timeout_s=settings.body_timeout_s,
            )
        ),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_level=log_level,
        access_log=False,
    )

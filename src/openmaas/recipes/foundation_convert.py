"""The process that converts one shipped foundation model (a GGUF file, or image weights), started by the server
as `python -m openmaas.recipes.foundation_convert NAME OUT_DIRECTORY`: the dequantised tensors, torch and
transformers then leave with it instead of staying in the server's memory (~770 MB of it for SmolLM2)."""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from pathlib import Path

from openmaas.recipes.foundation import FOUNDATION_MODELS, convert
from openmaas.recipes.generative import quiet_transformers


def _exit_with_server() -> None:
    # The server holds the other end of stdin: the read returns when it ends, however it ends (even kill -9),
    # and the conversion must not outlive it. The raw descriptor, not sys.stdin: a daemon thread blocked inside
    # a buffered reader aborts the interpreter's shutdown.
    while os.read(0, 4096):
        pass
    os._exit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in FOUNDATION_MODELS:
        print("usage: python -m openmaas.recipes.foundation_convert NAME OUT_DIRECTORY", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    quiet_transformers()  # offline, and no progress bars: this process's stderr is the server's error report
    if stat.S_ISFIFO(os.fstat(0).st_mode):  # started by the server (by hand, stdin may be a terminal or empty)
        threading.Thread(target=_exit_with_server, name="exit-with-server", daemon=True).start()
    convert(argv[0], Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

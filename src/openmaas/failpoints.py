"""Fault injection for the crash tests: `OPENMAAS_FAILPOINT=<name>` kills the process at that point.

The points sit where a crash must not leave half a dataset or half a model version behind; the fault
tests set them to prove it. Unset, a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("OPENMAAS_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

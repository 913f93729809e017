"""A run's kernel: ipykernel's own launcher, with the collector paused while the kernel and the
library import (:mod:`dbrunbook.run.startup`), and settled after the first code the kernel runs (the
warm-up of a kernel started ahead, else the first notebook's first cell)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dbrunbook.run.startup import pause_collector, settle


def launch() -> None:
    pause_collector()
    # As ipykernel_launcher: the working folder off sys.path while the kernel imports
    # (the kernel puts it back), then IPKernelApp.launch_instance() in its two steps.
    if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
        del sys.path[0]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize()
    shell: Any = app.shell  # made by initialize()
    events = shell.events

    def settle_once(*_: Any) -> None:
        events.unregister("post_execute", settle_once)
        settle()

    # post_execute fires for silent requests too (the warm-up is one), unlike post_run_cell.
    events.register("post_execute", settle_once)
    app.start()


if __name__ == "__main__":
    launch()

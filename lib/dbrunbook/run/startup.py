"""A dbrunbook process's start: the cyclic garbage collector paused while it imports.

The CLI and a run's kernel each import some 1,500 modules at their start (papermill, nbformat,
SQLAlchemy, pandas). Those objects live as long as the process, yet the collector traverses them
again and again while they pile up: about 15% of the imports' CPU. Paused at the start, the
collector is turned back on once the work begins, with what the imports made frozen out of its
sight (``gc.freeze``: the move CPython documents for a process whose start-up builds a large,
long-lived heap). Only a process that paused it settles it: in JupyterLab or under Papermill's
own CLI nothing here changes the collector.
"""
from __future__ import annotations

import gc

_paused = False


def pause_collector() -> None:
    """Pause the cyclic collector for the imports to come (reference counting still frees
    everything that is not in a cycle); :func:`settle` turns it back on."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def settle() -> None:
    """The imports are done: freeze what they made and turn the collector back on, if
    :func:`pause_collector` paused it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()

"""How a run meets SIGINT and SIGTERM: both stop it (:func:`install_sigterm`), and both are held
while the runner does its own bookkeeping.

A phase's notebook stops at once on a signal: its kernel is stopped and the ledger settled
(:func:`dbrunbook.run.runner.run_phases`). Between phases and after the last one, though, the runner
renders pages, writes the manifest, seals the run and shuts its kernel down; a signal landing there
used to escape as a bare KeyboardInterrupt and leave the manifest saying ``running``. Held instead,
it is acted on where the runner can do it cleanly: before the next phase starts, or, after the last
phase, by saying so once the run is archived. A second signal while one is held stops the runner
at once (the way out of a hung connection).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import Terminated

_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
#: The exit code of a command a signal stopped, as a shell gives it (128 + the signal's number).
EXIT_CODE = {"SIGINT": 130, "SIGTERM": 143}


def install_sigterm() -> None:
    """Make SIGTERM stop a run as SIGINT does (cron, systemd and CI send SIGTERM)."""

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, _raise)


def name_of(stop: KeyboardInterrupt) -> str:
    """The signal a stop came from: SIGTERM raises :class:`Terminated`, SIGINT KeyboardInterrupt."""
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"


def _stop(name: str) -> KeyboardInterrupt:
    return Terminated() if name == "SIGTERM" else KeyboardInterrupt()


class HeldSignals:
    """What :func:`held` received; :meth:`let_through` runs a block with the signals as they were."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.received: str | None = None
        self._saved: dict[int, Any] = {}

    def _hold(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # the second one: stop now
            raise _stop(_NAMES[signum])
        self.received = _NAMES[signum]

    def _install(self) -> None:
        if not self._saved:
            # A signal the process ignores (a background job started with SIGINT ignored) stays
            # ignored, and one whose handler is not Python's (None) is left alone: neither is held.
            now = {signum: signal.getsignal(signum) for signum in _NAMES}
            self._saved = {signum: h for signum, h in now.items() if h is not None and h != signal.SIG_IGN}
        for signum in self._saved:
            signal.signal(signum, self._hold)

    def _restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    @contextmanager
    def let_through(self) -> Iterator[None]:
        """Run the block with the signals handled as before :func:`held` (a phase's notebook). A
        signal held until now is raised here, at the block's start, as that handling would have
        raised it (marked ``held``: nothing of the block had started)."""
        if not self.active:
            yield
            return
        self._restore()
        try:
            if self.received is not None:
                stop = _stop(self.received)
                stop.held = True  # type: ignore[attr-defined]
                raise stop
            yield
        finally:
            self._install()


@contextmanager
def held() -> Iterator[HeldSignals]:
    """Hold SIGINT and SIGTERM for the block (the main thread only: elsewhere nothing changes)."""
    state = HeldSignals(threading.current_thread() is threading.main_thread())
    if not state.active:
        yield state
        return
    state._install()
    try:
        yield state
    finally:
        state._restore()


def was_held(stop: BaseException) -> bool:
    """Whether ``stop`` is a signal :func:`held` kept until a block's start."""
    return bool(getattr(stop, "held", False))

"""The kernel a run's phase notebooks execute in: one per run, started ahead when it can be.

A kernel's start (about 0.45 s) and the library's imports inside it (about 0.7 s) are the largest
fixed costs of ``dbrunbook run``. One kernel serves all of a run's phases, each notebook in a clean
namespace; and the CLI starts it *ahead* (:func:`start_ahead`), before its own imports, so that on
two cores the kernel boots and imports the library while the CLI imports its own and checks its
guards. :func:`run_kernel` then adopts that kernel, or starts one when there is none to adopt.

Only the standard library and jupyter_client are imported here: this module runs before the rest.
"""
from __future__ import annotations

import atexit
import functools
import os
import queue
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERNEL_LOG = "kernel_stderr.log"
_LOG_PREFIX = "dbrunbook-kernel-"  # in the temporary folder, for kernels not tied to one run's folder

#: Lines a kernel writes that say nothing about the run: the transport notice ipykernel 7 logs on
#: plain TCP over loopback, and the KeyboardInterrupt it logs when the runner shuts it down.
KERNEL_NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")

# The kernel's own warnings (ipykernel 7 warns about plain TCP on loopback) would bury the one line
# an unattended run prints on failure; its errors still come through.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]

#: What a kernel started ahead does while it waits: import what every phase notebook's first cell
#: needs, and render one table as a step shows it. ``__import__`` binds no name: the first notebook
#: finds the namespace as a new kernel leaves it.
WARM_MODULES = ("dbrunbook.catalog.expect", "dbrunbook.catalog.introspect", "dbrunbook.phases.base")
WARM_UP = "; ".join(f"__import__({m!r})" for m in WARM_MODULES) + \
    "; __import__('dbrunbook.phases.evidence', fromlist=['warm_up']).warm_up()"


@contextmanager
def stderr_to(path: Path, *, tidy: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to ``path`` for the block: the kernel Papermill starts inherits it,
    so its noise (ipykernel warnings, libzmq's shutdown assertions under load) lands in the
    archive instead of burying the one line an unattended run prints on failure. With ``tidy``,
    an empty log is removed at the block's end (not for a kernel that goes on writing to it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    if tidy:
        tidy_kernel_log(path)


def tidy_kernel_log(path: Path) -> None:
    """Drop the kernel's known noise from its log, and the log when nothing else is left: a
    reviewer should find a kernel_stderr.log only when it holds something worth reading."""
    if not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    kept = [line for line in lines if not any(noise in line for noise in KERNEL_NOISE)]
    if not "".join(kept).strip():
        path.unlink()
    elif len(kept) != len(lines):
        path.write_text("".join(kept))


@functools.cache  # one class per process, made when first needed (jupyter_client is imported here)
def _kernel_client_class() -> Any:
    from jupyter_client.blocking.client import BlockingKernelClient

    class RunKernelClient(BlockingKernelClient):  # type: ignore[misc]
        def wait_for_ready(self, timeout: float | None = None) -> None:
            """jupyter_client's handshake without its fixed waits (0.2 s and more per notebook): ask
            for kernel_info until its reply has come *and* the broadcast channel has delivered a
            message, which proves the channel connected and no output of the first cell is lost."""
            deadline = time.monotonic() + (60.0 if timeout is None else timeout)
            while True:
                sent = self.kernel_info()
                try:
                    reply = self._recv_reply(sent, timeout=1)
                except TimeoutError:
                    reply = None
                if reply is not None and reply["msg_type"] == "kernel_info_reply":
                    try:
                        self.iopub_channel.get_msg(timeout=0.02)
                    except queue.Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(reply)
                        break
                if not self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")
            while True:  # the status messages of the handshake itself
                try:
                    self.iopub_channel.get_msg(timeout=0.02)
                except queue.Empty:
                    break

    return RunKernelClient


def launch_command(command: list[str]) -> list[str]:
    """The kernel's command with :mod:`dbrunbook.run.kernel_launcher` in place of ipykernel's launcher,
    when the kernel is this interpreter's own ipykernel; any other kernel command as it is."""
    if command[:3] == [sys.executable, "-m", "ipykernel_launcher"]:
        return [sys.executable, "-m", "dbrunbook.run.kernel_launcher", *command[3:]]
    return command


def _new_manager() -> Any:
    return _kernel_manager_class()(kernel_name="python3", client_factory=_kernel_client_class())


@functools.cache
def _kernel_manager_class() -> Any:
    from jupyter_client.manager import KernelManager

    class RunKernelManager(KernelManager):  # type: ignore[misc]
        """Remembers the clients Papermill opens on the shared kernel, so each notebook's client
        is closed when its notebook ends (Papermill leaves them open when it does not own the kernel)."""

        def client(self, **kwargs: Any) -> Any:
            made = super().client(**kwargs)
            self.__dict__.setdefault("_run_clients", []).append(made)
            return made

        def close_clients(self) -> None:
            for made in self.__dict__.pop("_run_clients", []):
                made.stop_channels()

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            return launch_command(super().format_kernel_cmd(extra_arguments))

        async def _async_wait(self, pollinterval: float = 0.1) -> None:
            # After its kill, a kernel is gone within milliseconds; jupyter_client polls every 0.1 s.
            await super()._async_wait(pollinterval=0.01)

    return RunKernelManager


@dataclass
class _Ahead:
    """A kernel not tied to one run's folder: started before its run knew its archive folder, or
    kept from the run before (:func:`kept_kernels`). Its stderr goes to ``log``, whose bytes from
    ``copied`` on belong to the run that has it; it is only taken where it was started (same working
    folder, same environment)."""

    manager: Any
    cwd: str
    environ: dict[str, str]
    log: Path
    warming: tuple[Any, str] | None  # the client that sent the imports, and its request's id
    copied: int = 0


_AHEAD: list[_Ahead] = []
_KEEP: list[bool] = []  # non-empty inside kept_kernels()


def _start_logged(cwd: Path) -> _Ahead:
    log = _new_log()
    manager = _new_manager()
    with stderr_to(log, tidy=False):  # the kernel writes to it after its start too
        manager.start_kernel(cwd=str(cwd), extra_arguments=KERNEL_ARGUMENTS)
    atexit.unregister(discard_ahead)  # once per process, however many runs start one
    atexit.register(discard_ahead)
    return _Ahead(manager, str(cwd), dict(os.environ), log, None)


def _new_log() -> Path:
    """A temporary log for a kernel not tied to one run's folder, named after this process. A process
    killed outright (SIGKILL) cannot remove its log: the next one removes those that stayed empty
    and whose process is gone (one that holds something is left for whoever looks into the kill)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{_LOG_PREFIX}*-*.log"):
        owner = stale.name[len(_LOG_PREFIX):].split("-", 1)[0]
        try:
            if owner.isdigit() and not _alive(int(owner)) and stale.stat().st_size == 0:
                stale.unlink()
        except OSError:  # another process's sweep took it first
            pass
    handle, name = tempfile.mkstemp(prefix=f"{_LOG_PREFIX}{os.getpid()}-", suffix=".log")
    os.close(handle)
    return Path(name)


def _alive(pid: int) -> bool:
    # psutil.pid_exists, without importing psutil here (this module runs before the rest).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def start_ahead(cwd: Path) -> None:
    """Start the next run's kernel now and have it import the library in the background; the
    caller gets on with its own start-up. Shut down at exit when no run takes it."""
    if _AHEAD:
        return
    ahead = _start_logged(cwd)
    client = ahead.manager.client()
    # No heartbeat channel: the manager knows whether its kernel lives, and a heartbeat thread
    # stopped before it has made its socket would make one afterwards, for nothing.
    client.start_channels(hb=False)
    # Queued on the shell channel: the kernel runs it as soon as it is up, and the first notebook's
    # requests wait behind it. Silent, so nothing of it reaches any notebook.
    ahead.warming = (client, client.execute(WARM_UP, silent=True, store_history=False))
    _AHEAD.append(ahead)


@contextmanager
def kept_kernels() -> Iterator[None]:
    """Within the block, a run's kernel outlives its run and serves the next run of this process
    (``demo`` plays a dozen runs one after another): the kernel's start and the library's imports
    are paid once, as they are for a run's phases. Each notebook still starts in a clean namespace;
    what the kernel writes to its stderr goes to the log of the run it serves (ipykernel echoes a
    C library's writes from a thread: one echoed after its run ended lands in the next run's log);
    a run that stopped on an exception or a signal shuts its kernel down. Shut down at the block's end."""
    _KEEP.append(True)
    try:
        yield
    finally:
        _KEEP.pop()
        if not _KEEP:
            discard_ahead()


def discard_ahead() -> None:
    """Shut down a kernel started ahead that no run took."""
    while _AHEAD:
        ahead = _AHEAD.pop()
        try:
            ahead.manager.close_clients()
            ahead.manager.shutdown_kernel(now=True)
        except Exception:  # already gone (a signal's stop_kernel killed it)
            pass
        ahead.log.unlink(missing_ok=True)


def _take_ahead(cwd: Path) -> _Ahead | None:
    if not _AHEAD:
        return None
    ahead = _AHEAD[0]
    # The kernel inherited the environment at its start: a run that has since set a variable (a raw
    # URL travels as one) needs a kernel started after it.
    if ahead.cwd != str(cwd) or ahead.environ != dict(os.environ) or not ahead.manager.is_alive():
        discard_ahead()
        return None
    _AHEAD.clear()
    # Its reply is read here, by the client that asked: the clients of one kernel manager share a
    # session (and so a socket identity and message ids), and a reply left unread would reach
    # the next client as if it answered that client's own request.
    if ahead.warming is not None:
        client, sent = ahead.warming
        try:
            _await_reply(ahead.manager, client, sent)
        except RuntimeError:  # it died warming up: shut it down, and the run starts its own
            _AHEAD.append(ahead)
            discard_ahead()
            return None
        ahead.warming = None
        ahead.manager.close_clients()
    return ahead


@contextmanager
def run_kernel(folder: Path, cwd: Path) -> Iterator[Any]:
    """One kernel for all the phases of a run: the one started ahead, else started now (its start
    and the library's imports are paid once, not per phase), shut down at the end. Its stderr ends
    in the run's ``kernel_stderr.log``."""
    ahead = _take_ahead(cwd)
    if ahead is None and _KEEP:
        ahead = _start_logged(cwd)  # its stderr in a log of its own: it will serve other runs
    if ahead is not None:
        manager = ahead.manager
    else:
        manager = _new_manager()
        with stderr_to(folder / KERNEL_LOG):  # the kernel inherits fd 2 at its start
            manager.start_kernel(cwd=str(cwd), extra_arguments=KERNEL_ARGUMENTS)
    keep = False
    try:
        yield manager
        keep = bool(_KEEP) and ahead is not None and manager.is_alive()
    finally:
        if keep and ahead is not None:
            manager.close_clients()
            ahead.copied = _copy_log(ahead.log, folder / KERNEL_LOG, ahead.copied)
            _AHEAD.append(ahead)
        else:
            try:
                manager.close_clients()
                manager.shutdown_kernel(now=True)
            except Exception:  # already killed by a signal's stop_kernel
                pass
            if ahead is not None:  # what it wrote for this run, to its very end
                _copy_log(ahead.log, folder / KERNEL_LOG, ahead.copied)
                ahead.log.unlink(missing_ok=True)
        tidy_kernel_log(folder / KERNEL_LOG)


def _copy_log(source: Path, into: Path, start: int) -> int:
    """Append what ``source`` holds from byte ``start`` on to ``into``; returns where it ends."""
    try:
        with source.open("rb") as log:
            log.seek(start)
            text = log.read()
    except OSError:
        return start
    if text:
        with into.open("ab") as log:
            log.write(text)
    return start + len(text)


def clean_namespace(manager: Any) -> None:
    """Forget the previous notebook's variables and outputs; modules stay imported, which is the
    point. Nothing to forget before the kernel's first notebook. A kernel that died is started again.
    Only the shell channel is used: its reply says the reset is done, with no wait for the broadcast
    channel to connect."""
    if not manager.is_alive():
        manager.restart_kernel(now=True)
    elif not manager.__dict__.get("_has_run"):
        manager.__dict__["_has_run"] = True
        return
    client = manager.client()
    client.start_channels(hb=False)
    try:
        # What `%reset -f` does, less its full garbage collection (0.1 s with pandas loaded).
        sent = client.execute("get_ipython().reset(new_session=False)", silent=True, store_history=False)
        _await_reply(manager, client, sent)
    finally:
        manager.close_clients()


def _await_reply(manager: Any, client: Any, sent: str, timeout: float = 120) -> None:
    """Wait for the shell reply to request ``sent``, as long as the kernel lives."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = client.get_shell_msg(timeout=1)
        except queue.Empty:
            if not manager.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the run's kernel did not answer") from None
            continue
        if reply["parent_header"].get("msg_id") == sent:
            return

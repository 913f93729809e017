"""The tests' ``dbrunbook`` commands, each in a process of its own, forked from one that has imported
the command line's modules already.

Some 140 CLI calls in the suite each spent 0.5 to 0.7 s of CPU importing the same 1,500 modules
before doing anything (papermill, nbconvert, SQLAlchemy, pandas). The server below imports them
once per pytest worker and forks a child per call: the child is a process of its own, with the
call's arguments, environment, working folder and output files, and it runs ``python -m
dbrunbook`` (runpy, as ``-m`` does) to its exit code, exit handlers included. What it cannot show
is a fault in a fresh interpreter's start (an import that fails, a variable read at import): the
README's commands, the demo, the kill tests and a few guards start ``python -m dbrunbook`` afresh
(``cli(..., fresh=True)`` or their own process).

Run as a script, this module is the server: one JSON request per line on stdin, two answers per
request on stdout (the child's pid, then its exit code and CPU seconds).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

# Imported by the server before it serves: every module a command may need, the library's own
# (less the two that run something on import) and what they import lazily.
_PRELOAD = ("papermill", "nbconvert", "nbconvert.exporters.html", "jupyter_client.manager", "pandas",
            "sqlalchemy", "psycopg", "pglast", "yaml")
_NOT_PRELOADED = ("__main__", "kernel_launcher")


def _preload() -> None:
    import gc
    import importlib
    import pkgutil

    import dbrunbook

    gc.disable()
    for module in pkgutil.walk_packages(dbrunbook.__path__, "dbrunbook."):
        if module.name.rsplit(".", 1)[-1] not in _NOT_PRELOADED:
            importlib.import_module(module.name)
    for name in _PRELOAD:
        importlib.import_module(name)
    # What the imports made stays as it is in every child: out of the collector's sight, so that no
    # child's collection writes to (and copies) those pages.
    gc.freeze()
    gc.enable()


def _child(request: dict[str, Any], channel: int) -> None:
    """In the forked child: become ``python -m dbrunbook <args>`` for this request; never returns."""
    stdin = os.open(os.devnull, os.O_RDWR)
    os.dup2(stdin, 0)
    # The answers' channel points at /dev/null too, rather than closed: its file object, inherited,
    # may still close it when this process ends, and must find a file there.
    os.dup2(stdin, channel)
    os.close(stdin)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # what -m puts first
    sys.argv = ["-m", *request["args"]]  # run_module puts the module's file first, as -m does
    import runpy

    # Raises SystemExit (or ends in os._exit): the interpreter exits as `python -m dbrunbook` would.
    runpy.run_module("dbrunbook", run_name="__main__", alter_sys=True)
    sys.exit(0)


def serve() -> None:
    _preload()
    channel = os.dup(1)
    answers = os.fdopen(channel, "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, channel)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status),
                                  "cpu": usage.ru_utime + usage.ru_stime}) + "\n")


class ForkingCli:
    """The parent's side: starts the server on first use, one call at a time (a call made while
    another runs, from a thread, gets a fresh interpreter instead)."""

    def __init__(self) -> None:
        self._server: subprocess.Popen[bytes] | None = None
        self._pending = b""  # answers read but not yet taken
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0  # the children's CPU: they are the server's children, not ours

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        if not self._lock.acquire(blocking=False):
            return run_fresh(args, cwd, env, timeout)
        try:
            return self._forked(args, cwd, env, timeout)
        finally:
            self._lock.release()

    def _forked(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        server = self._start()
        with tempfile.TemporaryDirectory(prefix="dbrb-cli-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            assert server.stdin is not None
            server.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "env": env,
                                           "stdout": str(out), "stderr": str(err)}).encode() + b"\n")
            server.stdin.flush()
            pid = self._answer(server, timeout)["pid"]
            try:
                done = self._answer(server, timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._answer(server, 30)
                raise
            self.cpu_seconds += done["cpu"]
            return subprocess.CompletedProcess([sys.executable, "-m", "dbrunbook", *args], done["code"],
                                               out.read_text(), err.read_text())

    def _start(self) -> subprocess.Popen[bytes]:
        if self._server is None or self._server.poll() is not None:
            self._server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            env=os.environ.copy())
            self._pending = b""
        return self._server

    def _answer(self, server: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        """The server's next answer line. Read from the pipe itself, unbuffered: a buffered reader
        could hold both of a call's answers while select() waits for the second on the pipe."""
        assert server.stdout is not None
        fd = server.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(server.args, timeout)
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the CLI fork server ended (exit {server.wait()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._server is not None and self._server.poll() is None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            self._server.wait(timeout=30)


def run_fresh(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m dbrunbook <args>`` in a new interpreter, as a user starts it."""
    return subprocess.run([sys.executable, "-m", "dbrunbook", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


#: The pytest process's forking CLI (the root conftest adds its children's CPU to each test's).
FORKING = ForkingCli()


if __name__ == "__main__":
    serve()

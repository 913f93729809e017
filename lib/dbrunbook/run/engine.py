"""The engine phases run with: Papermill's own, its saves at each cell's start and end written
whole (compact JSON swapped in), so that a run killed at any instant leaves a readable page up to
the cell it died in; the kernel a run keeps is handed to it and its namespace cleaned first."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from .kernel import KERNEL_ARGUMENTS, KERNEL_LOG, clean_namespace, stderr_to

#: The name phases run under in Papermill's engine registry (see :func:`papermill_engine`).
ENGINE = "dbrunbook"


def execute_phase(notebook: Path, output: Path, parameters: dict[str, object], cwd: Path,
                  kernel: Any | None = None) -> None:
    import papermill

    with stderr_to(output.parent / KERNEL_LOG):
        if kernel is not None:
            clean_namespace(kernel)
        try:
            _execute(papermill, notebook, output, parameters, cwd, kernel)
        finally:
            if kernel is not None:
                kernel.close_clients()


def _execute(papermill: Any, notebook: Path, output: Path, parameters: dict[str, object], cwd: Path,
             kernel: Any | None = None) -> None:
    shared = {"km": kernel} if kernel is not None else {}
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, cwd=str(cwd),
        progress_bar=False, log_output=False, request_save_on_cell_execute=True,
        extra_arguments=KERNEL_ARGUMENTS, engine_name=papermill_engine(), **shared,
    )


def write_live(node: Any, path: Path) -> None:
    """Save a page while its notebook runs: compact JSON (the C encoder; nbformat's indented form
    takes the pure-Python one, plus a deep copy and a schema check), swapped in whole, so that a
    run killed at any instant leaves a readable page up to the cell it died in. Papermill writes
    the finished page itself, in nbformat's own form."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(node, ensure_ascii=False))
    partial.replace(path)


@functools.cache
def papermill_engine() -> str:
    """Register (once per process) and name the engine phases run with: Papermill's own, whose
    saves at each cell's start and end (about 20 per phase) go through :func:`write_live`."""
    from papermill.engines import (
        NBClientEngine,
        NotebookExecutionManager,
        papermill_engines,
    )

    class LiveSaves(NotebookExecutionManager):  # type: ignore[misc]
        def save(self, **kwargs: Any) -> None:
            if self.output_path:
                write_live(self.nb, Path(self.output_path))
            self.last_save_time = self.now()

    class Engine(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None,
                             progress_bar: bool = True, log_output: bool = False, autosave_cell_every: int = 30,
                             **kwargs: Any) -> Any:
            # Papermill's Engine.execute_notebook, with LiveSaves as the execution manager.
            nb_man = LiveSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                               autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE, Engine)
    return ENGINE

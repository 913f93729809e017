"""Saying things from a phase's step: Markdown and tables become the step's evidence.

Inside a step (see :mod:`dbrunbook.phases.evidence`) what is said is gathered into the evidence the step
returns; outside one it is shown at once (Markdown and styled frames in Jupyter, plain text
anywhere else), unless a command asked for :func:`quiet`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DbrunbookError
from .evidence import (
    Block,
    Image,
    Table,
    Text,
    emit,
    in_notebook,
    kernel_shell,
    quiet,
    show_blocks,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["image", "in_notebook", "install_error_display", "quiet", "say", "show", "table"]


def _say(block: Block) -> None:
    if not emit(block):
        show_blocks([block])


def say(markdown: str) -> None:
    """A paragraph of Markdown."""
    _say(Text(markdown))


def show(frame: pd.DataFrame, caption: str | None = None, status_column: str | None = None) -> None:
    """A frame; ``status_column`` is coloured pass/fail."""
    _say(Table(frame, caption, status_column))


def image(png: bytes, path: str = "") -> None:
    """A chart (PNG), and where its file is kept."""
    _say(Image(png, path))


def table(pairs: list[tuple[str, str]]) -> str:
    """A two-column Markdown table."""
    lines = ["| | |", "|---|---|"]
    escaped = [(k, str(v).replace("|", "\\|")) for k, v in pairs]
    lines += [f"| **{k}** | {v} |" for k, v in escaped]
    return "\n".join(lines)


def install_error_display() -> None:
    """In a notebook, show a dbrunbook error as its one line rather than a traceback.

    The cell still fails (so Papermill and nbval see the error); only the noise goes."""
    shell = kernel_shell()
    if shell is None:
        return

    def _one_line(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        # What showtraceback(exception_only=True) shows, minus its "use %tb" hint line.
        self._showtraceback(etype, value, self.InteractiveTB.get_exception_only(etype, value))

    shell.set_custom_exc((DbrunbookError,), _one_line)

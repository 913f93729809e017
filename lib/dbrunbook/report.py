"""Showing evidence: Markdown and styled frames in Jupyter, plain text anywhere else."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from .errors import DbrunbookError

_PASS_STYLE = "background-color: #e6f4ea; color: #1e6b34"
_FAIL_STYLE = "background-color: #fce8e6; color: #a50e0e; font-weight: bold"
_SKIP_STYLE = "color: #666666"


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def in_notebook() -> bool:
    return _shell() is not None


_QUIET = [0]


@contextmanager
def quiet() -> Iterator[None]:
    """Show nothing outside a notebook for the block (a command that reports on its own)."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def say(markdown: str) -> None:
    """Show a paragraph of Markdown (plain text outside a notebook)."""
    if _QUIET[0] and not in_notebook():
        return
    if in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(markdown))
    else:
        print(markdown)


def _result_style(value: object) -> str:
    text = str(value).lower()
    if text in ("fail", "failed", "error", "removed"):
        return _FAIL_STYLE
    if text in ("pass", "passed", "ok", "added"):
        return _PASS_STYLE
    if text in ("skip", "skipped", "noop"):
        return _SKIP_STYLE
    return ""


def show(frame: pd.DataFrame, caption: str | None = None, status_column: str | None = None) -> None:
    """Show a frame; ``status_column`` is coloured pass/fail."""
    if _QUIET[0] and not in_notebook():
        return
    if not in_notebook():
        if caption:
            print(caption)
        print(frame.to_string(index=False) if len(frame) else "(none)")
        return
    from IPython.display import display

    if frame.empty:
        say(f"{caption + ': ' if caption else ''}*(none)*")
        return
    styler = frame.style.hide(axis="index").format(precision=2, na_rep="")
    if caption:
        styler = styler.set_caption(caption)
    if status_column and status_column in frame.columns:
        styler = styler.map(_result_style, subset=[status_column])
    styler = styler.set_properties(None, **{"text-align": "left", "white-space": "pre-wrap"})
    display(styler)


def table(pairs: list[tuple[str, str]]) -> str:
    """A two-column Markdown table."""
    lines = ["| | |", "|---|---|"]
    escaped = [(k, str(v).replace("|", "\\|")) for k, v in pairs]
    lines += [f"| **{k}** | {v} |" for k, v in escaped]
    return "\n".join(lines)


def install_error_display() -> None:
    """In a notebook, show a dbrunbook error as its one line rather than a traceback.

    The cell still fails (so Papermill and nbval see the error); only the noise goes."""
    shell = _shell()
    if shell is None:
        return

    def _one_line(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        # What showtraceback(exception_only=True) shows, minus its "use %tb" hint line.
        self._showtraceback(etype, value, self.InteractiveTB.get_exception_only(etype, value))

    shell.set_custom_exc((DbrunbookError,), _one_line)

"""What a phase's step found or did, as an object that renders itself.

A step of a phase (``run.plan()``, ``run.apply()``, ``run.verify()``, ...) returns an
:class:`Evidence`: the step's own result (``value``: a plan, a snapshot, a frame) and what it has to
say about it (``blocks``: paragraphs of Markdown and tables). The library prints nothing; a
notebook cell ends with the result and Jupyter shows it (``_ipython_display_``, or
``_repr_markdown_`` where IPython's display is not there); the CLI prints ``str(evidence)``; tests
read ``value`` and the tables; a fleet keeps ``to_dict()`` of each in its archive.

Inside a step, :func:`dbrunbook.phases.report.say` and :func:`dbrunbook.phases.report.show` add blocks to the
step's evidence. A step that fails shows what it had found before the error (the failing checks are
the point of the page), then raises.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    import pandas as pd

#: Rows of each table an evidence keeps in its data form (a fleet's archive holds one per database).
DATA_ROWS = 50

_PASS_STYLE = "background-color: #e6f4ea; color: #1e6b34"
_FAIL_STYLE = "background-color: #fce8e6; color: #a50e0e; font-weight: bold"
_SKIP_STYLE = "color: #666666"


@dataclass(frozen=True)
class Text:
    """A paragraph of Markdown."""

    markdown: str


@dataclass(frozen=True)
class Table:
    """A frame, with an optional caption and a pass/fail column to colour."""

    frame: pd.DataFrame
    caption: str | None = None
    status_column: str | None = None


@dataclass(frozen=True)
class Image:
    """A chart, as PNG bytes, and where its file is in the archive."""

    png: bytes
    path: str = ""


Block = Text | Table | Image

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")


@dataclass
class Evidence(Generic[T]):
    """One step's result and what it says about it."""

    step: str
    value: T
    blocks: list[Block] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [b.markdown for b in self.blocks if isinstance(b, Text)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def table(self, caption: str | None = None) -> pd.DataFrame:
        """The step's table with this caption (the first table without one)."""
        for t in self.tables:
            if caption is None or t.caption == caption:
                return t.frame
        raise KeyError(f"{self.step} shows no table{f' captioned {caption!r}' if caption else ''}")

    def render(self) -> str:
        """Plain text, for a terminal or a log."""
        return "\n".join(text_of(b) for b in self.blocks)

    __str__ = render

    def _repr_markdown_(self) -> str:
        return "\n\n".join(b.markdown if isinstance(b, Text) else markdown_table(b) if isinstance(b, Table)
                           else f"![chart]({b.path})" for b in self.blocks)

    def _ipython_display_(self) -> None:
        show_blocks(self.blocks, in_notebook=True)

    def to_dict(self, rows: int = DATA_ROWS) -> dict[str, Any]:
        """The evidence as JSON-ready data: its texts, and each table's caption and first rows."""
        return {"step": self.step, "texts": self.texts,
                "tables": [{"caption": t.caption, "rows": json.loads(t.frame.head(rows).to_json(
                    orient="records", date_format="iso", default_handler=str))} for t in self.tables]}


# The steps being run, innermost last; per thread and task, so that a helper thread (a progress
# bar, a writer in a test) never says something into another thread's step.
_COLLECTING: ContextVar[tuple[list[Block], ...]] = ContextVar("dbrunbook_collecting", default=())


@contextmanager
def collecting() -> Iterator[list[Block]]:
    """Gather what is said in the block instead of showing it."""
    blocks: list[Block] = []
    token = _COLLECTING.set((*_COLLECTING.get(), blocks))
    try:
        yield blocks
    finally:
        _COLLECTING.reset(token)


def emit(block: Block) -> bool:
    """Add ``block`` to the step being run; False when no step is collecting."""
    stack = _COLLECTING.get()
    if not stack:
        return False
    stack[-1].append(block)
    return True


def step(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], Evidence[T]]:
    """Make a phase method a step: what it says becomes the blocks of the :class:`Evidence` it
    returns. A step called by another step says it into the caller's evidence too; a step that
    raises shows what it had said (where nothing collects it), then raises."""
    @functools.wraps(method)
    def run_step(self: S, *args: P.args, **kwargs: P.kwargs) -> Evidence[T]:
        error: BaseException | None = None
        with collecting() as blocks:
            try:
                value = method(self, *args, **kwargs)
            except BaseException as exc:  # KeyboardInterrupt too: its evidence is shown all the same
                error = exc
        if not emit_all(blocks) and error is not None:
            show_blocks(blocks)
        if error is not None:
            raise error
        return Evidence(f"{getattr(self, 'phase', type(self).__name__)}.{method.__name__}", value, blocks)

    return run_step


def emit_all(blocks: list[Block]) -> bool:
    """Hand ``blocks`` on to an enclosing step; False when there is none."""
    return all(emit(b) for b in blocks) if _COLLECTING.get() else False


# -- showing --------------------------------------------------------------------------------


def kernel_shell() -> Any:
    """The IPython shell of a running kernel, or None (a terminal, a plain interpreter)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def in_notebook() -> bool:
    return kernel_shell() is not None


_QUIET = [0]


@contextmanager
def quiet() -> Iterator[None]:
    """Show nothing outside a notebook for the block (a command that reports on its own)."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def show_blocks(blocks: list[Block], *, in_notebook: bool | None = None) -> None:
    """Show blocks now: Markdown and styled tables in a notebook, plain text anywhere else (unless
    :func:`quiet`)."""
    notebook = kernel_shell() is not None if in_notebook is None else in_notebook
    if not notebook:
        if _QUIET[0]:
            return
        for block in blocks:
            print(text_of(block))
        return
    from IPython.display import Markdown, display

    for block in blocks:
        if isinstance(block, Text):
            display(Markdown(block.markdown))
        elif isinstance(block, Image):
            from IPython.display import Image as PNG

            display(PNG(data=block.png, format="png"))
        elif block.frame.empty:
            display(Markdown(f"{block.caption + ': ' if block.caption else ''}*(none)*"))
        else:
            display(styled(block))


def text_of(block: Block) -> str:
    if isinstance(block, Text):
        return block.markdown
    if isinstance(block, Image):
        return f"(chart: {block.path})"
    body = block.frame.to_string(index=False) if len(block.frame) else "(none)"
    return f"{block.caption}\n{body}" if block.caption else body


def markdown_table(block: Table) -> str:
    """A table as GitHub-flavoured Markdown (for displays that do not run IPython's)."""
    frame = block.frame
    head = f"*{block.caption}*\n\n" if block.caption else ""
    if frame.empty:
        return head + "*(none)*"
    def cell(value: object) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return head + "\n".join(lines)


def warm_up() -> None:
    """Render one styled table, as a step shows it: pandas' Styler loads and compiles its templates
    on first use (about 50 ms), which a kernel started ahead pays while it waits for its notebook."""
    import pandas as pd

    styled(Table(pd.DataFrame({"result": ["pass"]}), "warm", "result"))._repr_html_()


def _result_style(value: object) -> str:
    text = str(value).lower()
    if text in ("fail", "failed", "error", "removed"):
        return _FAIL_STYLE
    if text in ("pass", "passed", "ok", "added"):
        return _PASS_STYLE
    if text in ("skip", "skipped", "noop"):
        return _SKIP_STYLE
    return ""


def styled(block: Table) -> Any:
    """The frame as a notebook shows it: no index, status coloured, long text wrapped."""
    styler = block.frame.style.hide(axis="index").format(precision=2, na_rep="")
    if block.caption:
        styler = styler.set_caption(block.caption)
    if block.status_column and block.status_column in block.frame.columns:
        styler = styler.map(_result_style, subset=[block.status_column])
    return styler.set_properties(None, **{"text-align": "left", "white-space": "pre-wrap"})

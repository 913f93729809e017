"""The pages a reviewer reads weeks later, often without Jupyter: each executed notebook as HTML that
loads nothing from the network (no require.js, MathJax or mermaid from a CDN), with wrapping tables,
the outcome at its top and bottom, and a passed phase's warnings first."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ..state.status import Status
from ..targets.resolve import Target

# The reviewer reads pages offline, often weeks later: every page carries its own styles and
# loads nothing (no require.js, MathJax or mermaid from a CDN), and wide tables wrap.
_WRAP_CSS = """<style>
.jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow-x: visible !important; }
.jp-RenderedHTMLCommon table, table.dataframe { table-layout: auto !important; max-width: 100%; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th, table.dataframe td, table.dataframe th {
  white-space: normal !important; overflow-wrap: anywhere; word-break: break-word; }
.jp-RenderedText pre, .jp-RenderedHTMLCommon pre { white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
"""


_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>\s*|"
                              r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>\s*", re.S)


_CSS_COMMENT_URL = re.compile(r"/\*(?:(?!\*/).)*?https?://(?:(?!\*/).)*?\*/", re.S)


_EMPTY_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"\"[^>]*>\s*</script>\s*")


def offline_html(body: str) -> str:
    """The page without anything fetched from the network, and with wrapping tables."""
    body = _EXTERNAL_SCRIPT.sub("", body)
    body = _EMPTY_SCRIPT.sub("", body)
    body = _CSS_COMMENT_URL.sub("/* (link removed: the page loads nothing) */", body)
    return body.replace("</head>", _WRAP_CSS + "</head>", 1)


# What nbconvert's HTMLExporter adds to a page once its template has rendered, for screen readers
# and keyboards: an alt text on each image without one, and cells' inputs and outputs focusable.
_IMG_WITHOUT_ALT = re.compile(r"<img\b(?![^>]*\balt=)")


_FOCUSABLE = re.compile(r'<div\b([^>]*\bclass="(?:jp-Cell-inputWrapper|[^"]*(?<![\w-])jp-OutputArea-output(?![\w-])[^"]*)")')


NO_ALT = "No description has been provided for this image"


def accessible_html(html: str) -> str:
    """The accessibility pass of nbconvert's HTMLExporter, as two substitutions: it parses the whole
    page into a tree and writes it out again, which is 40% of a page's render."""
    html = _IMG_WITHOUT_ALT.sub(f'<img alt="{NO_ALT}"', html)
    return _FOCUSABLE.sub(r'<div\1 tabindex="0"', html)


@functools.cache
def html_exporter() -> Any:
    """One exporter per process: building one loads and compiles its templates (about 0.15 s),
    which every page after the first would pay again."""
    from nbconvert import HTMLExporter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class PageExporter(HTMLExporter):  # type: ignore[misc]
        def from_notebook_node(self, nb: Any, resources: dict[str, Any] | None = None,  # type: ignore[override]
                               **kw: Any) -> tuple[str, dict[str, Any]]:
            # HTMLExporter.from_notebook_node (nbconvert 7), with accessible_html for its last pass.
            langinfo = nb.metadata.get("language_info", {})
            lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
            highlight_code = self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            resources = self._init_resources(resources)
            filter_data_type = WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self,
                                                     resources=resources)
            self.register_filter("highlight_code", highlight_code)
            self.register_filter("filter_data_type", filter_data_type)
            html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            return accessible_html(html), resources

    return PageExporter(template_name="lab", mathjax_url="", require_js_url="", mermaid_js_url="",
                        jquery_url="", widget_renderer_url="")


def warm_exporter() -> None:
    """Pay the first page's one-off costs (imports, templates, the highlighter's and the markdown
    parser's patterns, the notebook validator: about 0.5 s) by rendering a small page."""
    import nbformat

    v4 = nbformat.v4
    node = v4.new_notebook(cells=[
        v4.new_markdown_cell("# warm\n\n| a | b |\n|---|---|\n| `1` | **2** |"),
        v4.new_code_cell("x = 1", outputs=[
            v4.new_output("stream", name="stdout", text="x\n"),
            v4.new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>",
                                                 "text/markdown": "**x**", "text/plain": "x"}),
            v4.new_output("error", ename="E", evalue="e", traceback=["E: e"])])])
    try:
        nbformat.validate(node)  # compiles the schema validator every save of the run uses
        html_exporter().from_notebook_node(node, resources={"metadata": {"name": "warm"}})
    except Exception:  # the run's own render says what is wrong, on the page it concerns
        pass


def render_html(notebook: Path, title: str | None = None) -> Path:
    import nbformat

    node = nbformat.read(str(notebook), as_version=4)
    body, _ = html_exporter().from_notebook_node(node, resources={"metadata": {"name": title or notebook.stem}})
    html = notebook.with_suffix(".html")
    html.write_text(offline_html(body))
    return html


def page_title(runbook: str, phase: str, target: Target, status: str) -> str:
    """runbook · phase · target · status: what a browser tab, a history list and a search show."""
    production = " (PRODUCTION)" if target.production else ""
    return f"{runbook} · {phase} · {target.name}{production} · {status}"


def put_status_on_page(output: Path, title: str, status: str, error: str | None) -> None:
    """The outcome at the top of the page and again at its bottom: a reviewer sees it without
    scrolling, and where the page ends."""
    import nbformat

    node = nbformat.read(str(output), as_version=4)
    node.cells = [c for c in node.cells if "dbrunbook-status" not in c.get("metadata", {}).get("tags", [])]
    verdict = "**PASSED**" if status == Status.PASSED else f"**{status.upper()}**"
    text = f"{verdict} · {title}" + (f"\n\n**Error:** `{error}`" if error else "")
    for position in (0, len(node.cells) + 1):
        node.cells.insert(position, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["dbrunbook-status"]}))
    nbformat.write(node, str(output))


def put_warnings_on_top(output: Path, warnings: list[str]) -> None:
    """A reviewer sees a passed phase's warnings first: a markdown cell at the top of its page."""
    import nbformat

    node = nbformat.read(str(output), as_version=4)
    text = "**Warnings of this run** (the phase passed; the runbook accepts these, each with its reason):\n\n" + \
        "\n".join(f"- {w}" for w in warnings)
    node.cells.insert(0, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["dbrunbook-warnings"]}))
    nbformat.write(node, str(output))

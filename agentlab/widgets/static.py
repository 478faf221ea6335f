"""What a page without a kernel shows of a live view: its static snapshot.

    from agentlab.widgets import static_snapshots
    static_snapshots([model_id, ...])   # {model_id: {"text/html": ..., ...}}, what each shows now

A widget's output in a saved notebook is only a reference to a model that a running kernel
holds, so nbconvert, a notebook viewer or the course site would show nothing where a view
was. Every agentlab view (and the Dashboard) therefore puts what it shows into the same
output as plain HTML (the views' own Python-rendered HTML and SVG), the flow its Mermaid
source as ``text/vnd.mermaid`` too, beside the widget reference; front ends with a widget
manager (JupyterLab, Notebook 7, Voila, VS Code) still rank the widget first.

At display time a view has often not seen anything yet. So the final state is asked for
at the end of a run: ``static_snapshots()`` answers, for the model ids of a notebook's
widget outputs, what each widget shows at that moment (a view closed before then, what it
showed when it closed). The course site's build (docs/tools/build.py) asks it in the
kernel that ran the notebook and writes the answers into the outputs. Boxes that hold views
(``VBox([HTML("..."), FlowView(...)])``) are snapshotted child by child.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import ipywidgets as widgets

__all__ = ["StaticSnapshot", "static_snapshots", "static_html"]

# The final snapshots of views closed before the end of a run, newest last (bounded: a long
# session that opens and closes views keeps only the latest).
_closed: OrderedDict[str, dict[str, str]] = OrderedDict()
_CLOSED_KEPT = 200


class StaticSnapshot:
    """A widget that also shows as static HTML: mixed in before the ipywidgets class."""

    # Not abc.abstractmethod: this mixes into ipywidgets classes, whose metaclass (traitlets'
    # MetaHasTraits) does not combine with ABCMeta; a widget that forgets it fails on display.
    def static_bundle(self) -> dict[str, str]:
        """What this widget shows now, by MIME type; ``text/html`` at least."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]  # the widget's
        if isinstance(bundle, dict):  # None for a widget with no view
            bundle.update(self.static_bundle())
            bundle["text/plain"] = (f"{type(self).__name__}: a live agentlab view "
                                    "(its snapshot is this output's HTML)")
        return bundle

    def _keep_final_snapshot(self) -> None:
        """Called by ``close()`` while the widget still has its model id."""
        model_id = getattr(self, "_model_id", None)
        if model_id is None:
            return
        try:
            _closed[model_id] = self.static_bundle()
        except Exception:  # a snapshot is a courtesy: closing must not fail for it
            return
        _closed.move_to_end(model_id)
        while len(_closed) > _CLOSED_KEPT:
            _closed.popitem(last=False)


def static_html(widget: Any) -> tuple[str, bool]:
    """The HTML that stands for ``widget`` on a static page, and whether it holds a view.

    A view gives its snapshot; a box, its children's in a row or a column; an ``HTML``
    widget, its value; a ``Label``, its text; other controls (buttons, text boxes), nothing:
    they do nothing without a kernel."""
    if isinstance(widget, StaticSnapshot):
        return widget.static_bundle().get("text/html", ""), True
    if isinstance(widget, widgets.Box):
        parts = [static_html(child) for child in widget.children]
        if not any(live for _, live in parts):
            return "".join(text for text, _ in parts), False
        direction = "row" if isinstance(widget, widgets.HBox) else "column"
        inner = "".join(f"<div>{text}</div>" for text, _ in parts if text)
        return (f"<div style='display:flex;flex-direction:{direction};flex-wrap:wrap;"
                f"gap:6px;align-items:flex-start'>{inner}</div>"), True
    if isinstance(widget, (widgets.HTML, widgets.HTMLMath)):
        return str(widget.value or ""), False
    if isinstance(widget, widgets.Label):
        return html.escape(str(widget.value or "")), False
    return "", False


def static_snapshots(model_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The static snapshot of each widget in ``model_ids`` that is or holds an agentlab view,
    as a MIME bundle (``text/html``; the flow's ``text/vnd.mermaid`` too). Widgets that hold
    no view, and ids this kernel does not know, are left out."""
    from ipywidgets.widgets.widget import _instances

    found: dict[str, dict[str, str]] = {}
    for model_id in model_ids:
        widget = _instances.get(model_id)
        if widget is None:
            if model_id in _closed:
                found[model_id] = dict(_closed[model_id])
            continue
        if isinstance(widget, StaticSnapshot):
            found[model_id] = widget.static_bundle()
            continue
        text, live = static_html(widget)
        if live:
            found[model_id] = {"text/html": text}
    return found

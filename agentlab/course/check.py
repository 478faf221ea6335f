"""A check's verdict, and the few helpers every lesson's check is written with.

    EXERCISE = Exercise("04", "Minutes of the meeting")

    @EXERCISE.check
    def check(meeting, minutes):
        if not_given(minutes):
            return EXERCISE.not_done("there is no `minutes` list yet", "follow the meeting ...")
        ...
        return EXERCISE.failed("your minutes hold 2 of the 4 decisions", "follow with replay=True",
                               "missing: 'Keep 5k in reserve' (cfo)")

A check returns a CheckResult, which is True only when the exercise is done. In Jupyter it
shows itself as a green (passed), red (failed) or grey (not done yet) box: what works or what
is wrong, a hint, and the details that back it; as text anywhere else. It also carries itself
as JSON under CHECK_MIME, so that a test reading an executed notebook knows each check's
verdict without parsing HTML.

A check never raises at the learner: `Exercise.check` turns an exception (their handler
failing, a name they have not defined yet, the server refusing) into a failed result that
names it. Nothing secret goes into a result: a URL's user and password are removed from every
text a result shows, whoever wrote it.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from typing import Any, Literal, ParamSpec, TypeVar

Status = Literal["passed", "failed", "not done"]
CHECK_MIME = "application/vnd.agentlab.check+json"

# What the exercise cell holds until the learner writes their answer: `minutes = ...`.
PLACEHOLDERS: tuple[Any, ...] = (Ellipsis, None)

_LOOK = {  # status -> (border, background, badge)
    "passed": ("#16a34a", "#f0fdf4", "✔ Passed"),
    "failed": ("#dc2626", "#fef2f2", "✘ Not yet right"),
    "not done": ("#64748b", "#f8fafc", "… Not done yet"),
}
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)

P = ParamSpec("P")
R = TypeVar("R")


def scrub(text: str) -> str:
    """`text` without the user and password of any URL in it (nats://u:p@host -> nats://host)."""
    return _USERINFO.sub(r"\1", text)


@dataclass(frozen=True)
class CheckResult:
    """Whether an exercise's answer works, what is wrong if not, and a hint.

    Truthy only when passed, so `assert check(...)` works in a script or a test.
    """

    lesson: str
    exercise: str
    status: Status
    message: str
    hint: str = ""
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in _LOOK:
            raise ValueError(f"a check's status is one of {sorted(_LOOK)}, not {self.status!r}")
        object.__setattr__(self, "message", scrub(self.message))
        object.__setattr__(self, "hint", scrub(self.hint))
        object.__setattr__(self, "details", tuple(scrub(str(d)) for d in self.details))

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    @property
    def title(self) -> str:
        return f"{self.lesson} · {self.exercise}"

    def text(self) -> str:
        """The verdict as plain text: the badge, the message, the details, the hint."""
        lines = [f"{_LOOK[self.status][2]}: {self.title}", f"  {self.message}"]
        lines += [f"    - {detail}" for detail in self.details]
        if self.hint:
            lines.append(f"  Hint: {self.hint}")
        return "\n".join(lines)

    __str__ = text

    def __repr__(self) -> str:
        return self.text()

    def as_json(self) -> dict[str, Any]:
        return {"lesson": self.lesson, "exercise": self.exercise, "status": self.status,
                "passed": self.passed, "message": self.message, "hint": self.hint,
                "details": list(self.details)}

    def _repr_html_(self) -> str:
        border, background, badge = _LOOK[self.status]
        details = "".join(f"<li>{_code(d)}</li>" for d in self.details)
        details = (f"<ul style='margin:4px 0 4px 18px;padding:0'>{details}</ul>"
                   if details else "")
        hint = (f"<div style='margin-top:6px'><b>Hint:</b> {_code(self.hint)}</div>"
                if self.hint else "")
        return (f"<div class='agentlab-check' data-status='{escape(self.status)}' "
                f"style='border-left:5px solid {border};background:{background};"
                "padding:8px 12px;margin:4px 0;border-radius:4px;font-family:system-ui,"
                "sans-serif;font-size:14px;color:#1e293b'>"
                f"<div><b style='color:{border}'>{escape(badge)}</b> "
                f"<span style='color:#475569'>{escape(self.title)}</span></div>"
                f"<div style='margin-top:4px'>{_code(self.message)}</div>{details}{hint}</div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self.text(), "text/html": self._repr_html_(),
                CHECK_MIME: self.as_json()}


def _code(text: str) -> str:
    """Escape `text` for HTML, showing `backticked` parts as code."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


class Exercise:
    """One lesson's exercise: its results carry its title, and its check never raises."""

    def __init__(self, lesson: str, exercise: str) -> None:
        self.lesson, self.exercise = lesson, exercise

    def passed(self, message: str, *details: str) -> CheckResult:
        return CheckResult(self.lesson, self.exercise, "passed", message, "", details)

    def failed(self, message: str, hint: str, *details: str) -> CheckResult:
        return CheckResult(self.lesson, self.exercise, "failed", message, hint, details)

    def not_done(self, message: str, hint: str, *details: str) -> CheckResult:
        return CheckResult(self.lesson, self.exercise, "not done", message, hint, details)

    def check(self, function: Callable[P, R]) -> Callable[P, R]:
        """Make `function` this exercise's check: whatever it raises becomes a failed result.

        An `async def` check stays one (the notebook awaits it): lesson 11's learner writes
        an async function, which only an async check can await on the kernel's loop.
        """
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def achecked(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
                try:
                    return await function(*args, **kwargs)
                except Exception as error:
                    return self._stopped(error)
            return achecked  # type: ignore[return-value]

        @functools.wraps(function)
        def checked(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
            try:
                return function(*args, **kwargs)  # type: ignore[return-value]
            except Exception as error:  # the learner's code, or the server, said no
                return self._stopped(error)
        return checked  # type: ignore[return-value]

    def _stopped(self, error: Exception) -> CheckResult:
        return self.failed(
            f"the check stopped at an error: {type(error).__name__}: {error}",
            "the error comes from running your answer against the server: fix what it "
            "names and run the cell again")

    def __repr__(self) -> str:
        return f"Exercise({self.lesson!r}, {self.exercise!r})"


def not_given(*answers: Any) -> bool:
    """True while any of `answers` is still the exercise cell's placeholder (`...` or None)."""
    return any(any(answer is p for p in PLACEHOLDERS) for answer in answers)


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def listing(items: Iterable[Any], limit: int = 5) -> str:
    """`a`, `b`, `c` and 2 more: a short list of names for a check's message."""
    shown = [f"`{item}`" for item in items]
    if not shown:
        return "none"
    more = len(shown) - limit
    text = ", ".join(shown[:limit])
    return f"{text} and {more} more" if more > 0 else text

"""The course's exercises check themselves: a check per lesson, run in the learner's cell.

    from agentlab.course import lesson04
    lesson04.check(meeting, minutes)     # ✔ passed, or what is wrong and a hint

Each lesson's check runs what the learner built against the live server the notebook uses
(it publishes test messages, delegates a task, reads the stream or the dead letters) and
returns a CheckResult: green when the answer works; red with what is wrong, named concretely
(the subject, the stream, the consumer, the expected and the actual), and a hint; grey while
the exercise cell still holds its placeholder (`...`).

Modules: `check` (CheckResult, Exercise and the helpers every check is written with),
`outcomes` (where a task ended: the ledger, the dead letters, or not yet) and one `lessonNN`
module per notebook, each with a `check(...)` function and an `EXERCISE`.
Lesson modules are imported by name (`from agentlab.course import lesson04`), so that a
notebook loads only its own lesson's dependencies (lesson 12's, for instance, need the
`mcp` extra's hub).
"""

from .check import (
    CHECK_MIME,
    CheckResult,
    Exercise,
    Status,
    listing,
    not_given,
    scrub,
    wait_until,
)

__all__ = ["CheckResult", "Exercise", "Status", "CHECK_MIME", "not_given", "wait_until",
           "listing", "scrub"]

"""Lesson 02, Queue groups and request/reply: a translation service of two workers.

    lesson02.check(lab, translators)

The check asks the learner's service for real, from a connection of its own: eight requests
at once on `tasks.translate.assign`. Every answer must be the word reversed with the worker
that made it, and each request must reach exactly one of the translators (a queue group);
two subscriptions without a common group would both get every request.
"""

from __future__ import annotations

from typing import Any

from .check import CheckResult, Exercise, listing, not_given, wait_until

EXERCISE = Exercise("02", "A translation service")
SUBJECT = "tasks.translate.assign"
GROUP = "translators"
WORDS = ("agent", "subject", "stream", "queue", "reply", "server", "ack", "wildcard")


@EXERCISE.check
def check(lab: Any, translators: Any) -> CheckResult:
    """Do the `translators` answer every request once, in one queue group?"""
    if not_given(translators):
        return EXERCISE.not_done(
            "there is no `translators` list yet (the cell still says `translators = ...`)",
            f"serve `{SUBJECT}` from two connections with `queue=\"{GROUP}\"` and keep the two "
            "subscriptions in a list `translators`")
    subs = list(translators) if isinstance(translators, (list, tuple)) else [translators]
    if len(subs) < 2:
        return EXERCISE.failed(f"`translators` holds {len(subs)} worker(s); the exercise asks "
                               "for two", "start two, each on a connection of its own")
    wrong = [s for s in subs if getattr(s, "subject", None) != SUBJECT]
    if wrong:
        return EXERCISE.failed(
            f"{len(wrong)} translator(s) listen on "
            f"{listing(getattr(s, 'subject', '?') for s in wrong)}, not on `{SUBJECT}`",
            f"serve exactly `{SUBJECT}`")
    before = sum(s.received for s in subs)
    client = lab.connect("course-check-02")
    try:
        answers = client.gather([(SUBJECT, {"text": word}) for word in WORDS], timeout=3)
    finally:
        client.close()
    failed = [(w, a) for w, a in zip(WORDS, answers, strict=True) if isinstance(a, Exception)]
    if failed:
        return EXERCISE.failed(
            f"{len(failed)} of {len(WORDS)} requests got no answer: "
            f"{type(failed[0][1]).__name__}: {failed[0][1]}",
            "use `serve()` (not `subscribe()`): it answers with what the handler returns")
    bad = []
    workers = []
    for word, answer in zip(WORDS, answers, strict=True):
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict) or body.get("translation") != word[::-1]:
            bad.append(f"`{word}` came back as {body!r}")
        workers.append(str(body.get("worker", "?")) if isinstance(body, dict) else "?")
    if bad:
        return EXERCISE.failed(
            f"{len(bad)} of {len(WORDS)} answers are not the word reversed",
            "return `{\"translation\": text[::-1], \"worker\": name}` where `text` is "
            "`msg.json()[\"text\"]`", *bad[:3])
    # every request was answered: now count what reached the translators
    # a second copy of each, if they share no group, arrives at about the same time
    wait_until(lambda: sum(s.received for s in subs) - before >= 2 * len(WORDS), 1.0)
    delivered = sum(s.received for s in subs) - before
    queues = sorted({str(getattr(s, "queue", "") or "") for s in subs})
    if delivered > len(WORDS) or queues != [GROUP]:
        return EXERCISE.failed(
            f"your {len(subs)} translators received {delivered} copies of {len(WORDS)} "
            f"requests: each request reached more than one of them (queue groups: "
            f"{listing(q or '(none)' for q in queues)})",
            f"give every translator the same `queue=\"{GROUP}\"`: a queue group hands each "
            "message to one member only")
    share = {w: workers.count(w) for w in sorted(set(workers))}
    return EXERCISE.passed(
        f"all {len(WORDS)} requests answered with the word reversed, each by one member of "
        f"the `{GROUP}` queue group",
        *(f"{worker}: {n} translation(s)" for worker, n in share.items()))

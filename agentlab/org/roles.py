"""Reference roles: deterministic handlers standing in for an LLM, so runs are repeatable.

    Agent(lab.connect("cto"), "cto", handler=cto_handler)

Swap any of them for your own callable ``handler(task, ctx)`` (sync or async) to plug in a
model: the agent around it (queue, retries, ledger, dead letters) stays the same.
A task's ``details`` can ask for the behaviours the demos need:
``{"seconds": 2}`` works that long (calling ``ctx.in_progress()``), ``{"fail_times": 1}``
fails the first attempt(s), ``{"always_fail": true}`` never succeeds.

``default_roles()`` is what ``Organisation(lab)`` runs: these, unless the environment names a
model (``AGENTLAB_LLM_BASE_URL``, ``AGENTLAB_LLM_MODEL``; see :mod:`agentlab.llm`), which
then answers for the roles in ``AGENTLAB_LLM_ROLES`` (all three if unset).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from ..llm import LlmConfig, reference_model_roles
from .context import TaskContext
from .models import Task

if TYPE_CHECKING:
    from .agent import TaskHandler


class TransientFailure(RuntimeError):
    """A failure that a retry may fix (a rate limit, a flaky dependency)."""


def _work(task: Task, ctx: TaskContext) -> None:
    seconds = float(task.details.get("seconds", 0))
    if task.details.get("always_fail"):
        raise TransientFailure(f"'{task.title}' depends on a service that is down")
    if ctx.deliveries <= int(task.details.get("fail_times", 0)):
        raise TransientFailure(f"'{task.title}' hit a flaky dependency "
                               f"(attempt {ctx.deliveries})")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Long work keeps telling JetStream it is alive, or it would be redelivered.
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        ctx.in_progress()


def _score(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:4], 16)


def cto_handler(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """Technical decisions: a stable answer derived from the title."""
    ctx.progress(f"CTO looking at '{task.title}'")
    _work(task, ctx)
    options = ["build it in-house", "use a managed service", "prototype first"]
    decision = options[_score(task.title) % len(options)]
    ctx.audit("decided", title=task.title, decision=decision)
    return {"decision": decision, "estimate_days": 1 + _score(task.title) % 8}


def cfo_handler(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """Budget answers: approve small asks, question big ones."""
    ctx.progress(f"CFO costing '{task.title}'")
    _work(task, ctx)
    amount = float(task.details.get("amount", 1000 + _score(task.title) % 9000))
    approved = amount <= 5000
    ctx.audit("budget", title=task.title, amount=amount, approved=approved)
    return {"approved": approved, "amount": amount}


async def ceo_handler(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """Strategy: splits the goal into a technical and a budget task for the CTO and CFO."""
    ctx.progress(f"CEO planning '{task.title}'")
    tech = await ctx.adelegate("cto", f"Technical plan: {task.title}")
    money = await ctx.adelegate("cfo", f"Budget: {task.title}")
    ctx.audit("delegated", title=task.title, to=["cto", "cfo"])
    return {"delegated": [tech.id, money.id]}


REFERENCE_ROLES = {"ceo": ceo_handler, "cto": cto_handler, "cfo": cfo_handler}


def default_roles() -> dict[str, TaskHandler | None]:
    """The reference roles, with those named by ``AGENTLAB_LLM_ROLES`` (all, if unset) asking
    the model when ``AGENTLAB_LLM_BASE_URL`` is set; read from the environment at each call.
    A configuration that cannot work raises LlmConfigError, naming the variable to fix."""
    roles: dict[str, TaskHandler | None] = dict(REFERENCE_ROLES)
    config = LlmConfig.from_env()
    if config is not None:
        roles.update(reference_model_roles(config))
    return roles

"""Lesson 11, Other agents, other languages: who is on duty, from the services alone.

    await lesson11.check(roles_on_duty, org)

The learner's `roles_on_duty(org_name)` is an async function that asks the NATS services
(`$SRV.PING`) which agent instances of an organisation run. The check awaits it on the
notebook's loop and compares its answer with the organisation as it really runs (its running
agents, role by role); then it scales the CFO up by one instance and asks again, so that an
answer remembered from before, or collected before every instance had replied, shows.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..org import Organisation
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("11", "Roles on duty, from the services")


def running(org: Organisation) -> dict[str, list[str]]:
    """role -> the sorted instance names of its running agents (roles with none left out)."""
    on_duty = {role: sorted(a.instance for a in agents if a.is_running)
               for role, agents in org.agents.items()}
    return {role: instances for role, instances in on_duty.items() if instances}


def _compare(step: str, got: Any, want: dict[str, list[str]], org: str) -> CheckResult | None:
    if not isinstance(got, dict):
        return EXERCISE.failed(
            f"{step}, `roles_on_duty({org!r})` returned a {type(got).__name__}, not a dict "
            "from role to instance names",
            "return `{role: sorted(instances)}`, e.g. `{\"ceo\": [\"ceo-1\"], ...}`")
    facts = [f"you found: {got}", f"the organisation runs: {want}"]
    extra, missing = sorted(set(got) - set(want), key=str), sorted(set(want) - set(got))
    if extra:
        return EXERCISE.failed(
            f"{step}, you found roles that {org} does not run: {listing(extra)}",
            "keep only answers whose metadata says `agentlab.kind` is \"agent\" and "
            f"`agentlab.org` is {org!r}; the role is the metadata's `agentlab.role`", *facts)
    if missing:
        return EXERCISE.failed(
            f"{step}, you missed the role(s) {listing(missing)}",
            "every instance answers $SRV.PING: collect answers until none has come for a "
            "moment (`ask_everyone` waits for you), and keep all of them", *facts)
    for role in sorted(want):
        if got[role] != want[role]:
            unsorted = isinstance(got[role], list) and sorted(got[role]) == want[role]
            return EXERCISE.failed(
                f"{step}, for `{role}` you found {got[role]}; the organisation runs "
                f"{want[role]}",
                "sort each role's list of instances" if unsorted else
                "an instance's name is its metadata's `agentlab.instance` (the service's "
                "`id` is another thing: a random id per service instance)", *facts)
    return None


@EXERCISE.check
async def check(roles_on_duty: Any, org: Organisation) -> CheckResult:
    """Does `roles_on_duty` find every running instance, now and with one more CFO?"""
    if not_given(roles_on_duty):
        return EXERCISE.not_done(
            "there is no `roles_on_duty` yet (the cell still says `roles_on_duty = ...`)",
            "write `async def roles_on_duty(org_name):` that asks `ask_everyone(\"$SRV.PING\")` "
            "and returns `{role: sorted(instances)}`")
    if not inspect.iscoroutinefunction(roles_on_duty):
        return EXERCISE.failed(
            f"`roles_on_duty` is a {type(roles_on_duty).__name__}, not an async function",
            "define it with `async def roles_on_duty(org_name):`, so that it can await "
            "`ask_everyone`")
    for step in ("now", "with one more CFO"):
        if step != "now":
            org.scale("cfo", len(running(org).get("cfo", [])) + 1)
        got = await roles_on_duty(org.org)
        problem = _compare(step, got, running(org), org.org)
        if problem is not None:
            return problem
    return EXERCISE.passed(
        f"`roles_on_duty({org.org!r})` found every running instance of {org.org}, from the "
        "services alone, before and after the CFO was scaled up",
        *(f"{role}: {instances}" for role, instances in sorted(running(org).items())))

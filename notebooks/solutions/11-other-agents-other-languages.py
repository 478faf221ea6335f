# Solution to the exercise of 11-other-agents-other-languages.ipynb. It runs inside that
# notebook, with the notebook's `ask_everyone`; the notebook then awaits its check:
#     %run -i solutions/11-other-agents-other-languages.py
#     await lesson11.check(roles_on_duty, org)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)


async def roles_on_duty(org_name):
    # Every running agent instance of `org_name`, by role, from $SRV.PING answers alone.
    on_duty = {}
    for answer in await ask_everyone("$SRV.PING"):
        meta = answer.get("metadata") or {}
        if meta.get("agentlab.kind") != "agent" or meta.get("agentlab.org") != org_name:
            continue  # another kind of service (a tool pool, a protocol gateway), or org
        on_duty.setdefault(meta["agentlab.role"], []).append(meta["agentlab.instance"])
    return {role: sorted(instances) for role, instances in on_duty.items()}


# Solution to the exercise of 12-an-llm-joins-the-organisation.ipynb. It runs inside that
# notebook, with the notebook's `hub_session`, `call` and `budget`; the notebook then
# awaits it and runs its check:
#     %run -i solutions/12-an-llm-joins-the-organisation.py
#     await give_up_the_budget(reason)
#     lesson12.check(org, budget, reason)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)

reason = "two billion euros is far above the quarter's budget: the board has to decide"


async def give_up_the_budget(reason):
    # As the LLM, in one MCP session: take the CFO's budget task and give it up, no retry.
    async with hub_session() as hub:
        while True:
            held = await call(hub, "next_task", role="cfo", wait_s=15)
            if held["state"] == "empty":
                raise LookupError(f"{budget.title!r} did not reach the CFO's queue: {held['hint']}")
            if held["id"] == budget.id:
                break
            # an older CFO task (a shared server): answer it briefly and take the next one
            await call(hub, "complete_task", id=held["id"], result="done in an earlier session")
        print(f"took {held['title']!r} (delivery {held['delivery']}), details {held['details']}")
        failed = await call(hub, "fail_task", id=held["id"], error=reason, retry=False)
        print(f"fail_task: {failed['state']}, {failed['outcome']}")

# Solution to the exercise of 10-bring-your-own-agent.ipynb. It runs inside that notebook,
# with the notebook's `org`, `model`, `model_name`, `bean_counter`, `parse_json`,
# `UnusableAnswer`, `patient`, `put_in_role` and `completions`:
#     %run -i solutions/10-bring-your-own-agent.py
#     lesson10.check(org, cfo_by_model)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
import json

# A real model if the notebook found one; offline, the sloppy stand-in of the exercise.
offline = model_name == "offline stand-in"
cfo_model, cfo_model_name = (bean_counter, "bean counter") if offline else (model, model_name)


def cfo_prompt(task):
    return (f"You are the CFO of {task.org}. The {task.requested_by} asks you for a budget.\n"
            f"Task: {task.title}\n"
            f"Details: {json.dumps(task.details)}\n"
            'Answer with one JSON object: {"approved": true or false, '
            '"amount": a number of euros, "reason": "..."}')


def budget_problem(answer):
    # What is wrong with the model's answer ("" if nothing).
    if not isinstance(answer["approved"], bool):
        return f"'approved' is not true or false: {answer['approved']!r}"
    amount = answer["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return f"'amount' is not a number: {amount!r}"
    return ""


def cfo_by_model(task, ctx):
    ctx.progress(f"asking {cfo_model_name}")
    answer = parse_json(cfo_model(cfo_prompt(task)), "approved", "amount")
    problem = budget_problem(answer)
    if problem:  # like any failure, this makes the agent try again
        raise UnusableAnswer(problem)
    ctx.audit("budget", title=task.title, amount=answer["amount"], approved=answer["approved"])
    return {"approved": answer["approved"], "amount": answer["amount"],
            "reason": answer.get("reason", ""), "model": cfo_model_name}


put_in_role("cfo", patient(cfo_by_model))
goal = org.assign("Open an office in Lisbon")
answers = {event["role"]: event for event in completions([goal.id], per_id=3)}
for role in ("cto", "cfo"):
    event = answers[role]
    print(f"{role.upper()} (delivery {event['deliveries']}): {event['result']}")

# Solution to the exercise of 00-start-here.ipynb. It runs inside that notebook, with the
# notebook's `org` and `done`:  %run -i solutions/00-start-here.py
#     lesson00.check(org, my_goal, mine)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)

my_goal = org.assign("Open an office in Lisbon")

mine = []
while len(mine) < 3:  # the CEO, the CTO and the CFO
    event = done.next(timeout=10).json()
    if event["correlation_id"] == my_goal.id:  # skip anyone else's completions
        mine.append(event)

for event in mine:
    print(f"{event['role'].upper()} finished {event['title']!r}")
cto = next(event for event in mine if event["role"] == "cto")
print("The CTO decided:", cto["result"]["decision"])

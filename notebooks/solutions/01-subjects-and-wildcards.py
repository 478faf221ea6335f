# Solution to the exercise of 01-subjects-and-wildcards.ipynb. It runs inside that notebook,
# with the notebook's `s`:  %run -i solutions/01-subjects-and-wildcards.py
#     lesson01.check(lab, observer_pattern)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)

# org.*   : any one organisation id, in the {org} place
# tasks.> : tasks.created, tasks.completed, and any tasks.* subject added later
observer_pattern = f"{s.root}.org.*.tasks.>"
print("pattern:", observer_pattern)

# Also right: "genbrain.org.*.tasks.*" (exactly one token after tasks). And "system" fits in
# the {org} place too, but the platform has no tasks, so it adds nothing here.
# The observer would subscribe with:  lab.connect("observer").subscribe(observer_pattern)

# Solution to the exercise of 09-observability-and-performance.ipynb. It runs inside that
# notebook, with the notebook's `lab`, `notebook_started`, `replay`, `table` and `display`:
#     %run -i solutions/09-observability-and-performance.py
#     lesson09.check(lab, took, since=notebook_started)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
import statistics

records = replay(lab, "acme", since=notebook_started)
created = {r.event.id: r for r in records if r.kind == "task.created"}

took = {}  # role -> [(seconds from created to completed, title)]
for record in records:
    if record.kind == "task.completed" and record.event.task_id in created:
        seconds = (record.time - created[record.event.task_id].time).total_seconds()
        took.setdefault(record.event.role, []).append((seconds, record.event.title))

display(table("Created → completed, from the audit log", ["Role", "Tasks", "Median", "Max",
                                                           "Took longest"],
              [(role, len(times), f"{statistics.median(t for t, _ in times) * 1000:.1f} ms",
                f"{max(times)[0] * 1000:.1f} ms", max(times)[1])
               for role, times in sorted(took.items())]))

seconds, title = max(entry for times in took.values() for entry in times)
print(f"Longest of all: {title!r}, {seconds:.2f} s. It waited in AGENT_TASKS while no CTO "
      "was running (the backlog of section 4).")

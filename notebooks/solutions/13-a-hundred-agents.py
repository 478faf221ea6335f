# Solution to the exercise of 13-a-hundred-agents.ipynb. It runs inside that notebook, with
# the notebook's `org` and `wait_until_zero`; the notebook then runs its check:
#     %run -i solutions/13-a-hundred-agents.py
#     lesson13.check(audit, backlog)
# ruff: noqa: F821 (the names come from the notebook)

# At zero while at most 5 tasks wait; one replica per 10 waiting, at most 3; back to zero 2 s
# after the queue was last active. A tick every 0.25 s, so that it happens quickly.
audit = org.autoscale("audit", activation_lag=5, lag_threshold=10, max_replicas=3,
                      cooldown=2, interval=0.25)
backlog = [org.assign(f"Audit the expenses of week {n}", to="audit") for n in range(25)]
wait_until_zero(audit)
print(f"audit: {len(audit.decisions)} decisions, now {audit.replicas()} replica(s)")

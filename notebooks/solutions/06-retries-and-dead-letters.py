# Solution to the exercise of 06-retries-and-dead-letters.ipynb. It runs inside that notebook,
# with the notebook's `lab`, `cfo`, `office`, `completions`, `Agent` and `retry_delay`:
#     %run -i solutions/06-retries-and-dead-letters.py
#     lesson06.check(treasury, payment)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
import time

OUTAGE = 2.5  # seconds

# 1. When does the last attempt happen, for each max_deliver?
last_attempt = {n: sum(retry_delay(k) for k in range(1, n)) for n in range(1, 6)}
for n, at in last_attempt.items():
    print(f"max_deliver={n}: last attempt at +{at:.1f} s"
          + ("  <- after the outage" if at > OUTAGE else ""))

# 2. The smallest max_deliver that outlasts the outage.
needed = min(n for n, at in last_attempt.items() if at > OUTAGE)
print(f"\na {OUTAGE} s outage needs max_deliver={needed}\n")

# 3. Prove it: a treasurer whose service is down for OUTAGE seconds.
outage_ends = 0.0


def treasurer(task, ctx):
    if time.monotonic() < outage_ends:
        raise ConnectionError(f"the bank is down (attempt {ctx.deliveries})")
    return {"paid": task.details["amount"], "attempt": ctx.deliveries}


treasury = Agent(lab.connect("treasurer-1"), "treasurer", "acme", treasurer,
                 max_deliver=needed, ack_wait=5, instance="treasurer-1").start()
outage_ends = time.monotonic() + OUTAGE
payment = cfo.delegate("treasurer", "Pay the Tokyo supplier", {"amount": 603.0})

[event] = completions([payment])
print(f"{event['title']!r} completed on delivery {event['deliveries']} of {needed}: "
      f"{event['result']}")

# Solution to the exercise of 08-cluster-and-failover.ipynb. It runs inside that notebook,
# with the notebook's `cluster`, `subject` and `task`:
#     %run -i solutions/08-cluster-and-failover.py
#     lesson08.check(cluster, publisher, acked_while_down)   # the check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
import time

from agentlab.cluster import AckedPublisher

publisher = AckedPublisher(cluster.connect("ceo-quorum"), subject, payload=task).start()
publisher.wait_for_acks(20)

first, second, third = cluster.names
cluster.stop_node(first)
cluster.stop_node(second)
print(f"{first} and {second} are down; only {third} is left")
time.sleep(1)  # a publish that was in flight as they went may still be confirmed
count = len(publisher.acked)
time.sleep(3)
acked_while_down = len(publisher.acked) - count
print(f"tasks acknowledged in the next 3 s: {acked_while_down}")

cluster.start_node(second)
back_at = time.monotonic()
publisher.wait_for_acks(count + 20, timeout=30)
print(f"{second} is back: two of three, a majority again; the flow resumed "
      f"{time.monotonic() - back_at:.1f} s later")

publisher.stop()
cluster.start_node(first)
cluster.wait_for_meta_leader()
print(cluster)

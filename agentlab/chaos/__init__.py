"""The fault suite: real agent processes and a real nats-server, SIGKILLed while they work.

    python -m agentlab.chaos --tasks 10000          # `make chaos`; tests/test_chaos.py runs 1,000

    from agentlab.chaos import ChaosConfig, run
    report = run(ChaosConfig(tasks=1000, seed=7)); print(report.ok)

It starts an embedded nats-server (``sync_interval: always``, a store directory of its
own), several roles with a few ``python -m agentlab.programs.worker`` processes each, and a
dead-letter office. Then it publishes the tasks at a steady rate while it SIGKILLs a
random agent process every couple of seconds (and starts a new one in its place) and
SIGKILLs the nats-server twice, restarting it on the same store directory and port.
At the end it checks, task by task, that every task was completed exactly once in effect
or is in the dead-letter queue with a reason, that no handler ran again once its task was
recorded, and prints the figures as a table.

The modules: ``effects`` (the handler the workers run and its log), ``config``,
``targets`` (one server or a three-node cluster), ``netns`` (the cluster's nodes in network
namespaces, for partitions), ``suite`` (the run), ``faults`` (its pauses, partitions and
leader kills), ``checks`` (the verdict on every task and every handler run), ``report`` and
``recovery`` (the figures), ``cli``.

Faults like Jepsen's, beside the SIGKILLs (``make chaos``, ``make chaos-cluster``):

- ``--agent-pauses N``: SIGSTOP a random agent process for twice the ack wait, then
  SIGCONT. Its tasks are redelivered to the others meanwhile; when it wakes it finishes
  them, late: its creates are refused by the effect store, its records and acks change
  nothing.
- ``--server-pauses N``: SIGSTOP the server (on a cluster the AGENT_TASKS leader, 12 s:
  longer than Raft's 4-9 s election timeout, so the others elect a new leader and work on),
  then SIGCONT; the woken node learns of the newer term and follows.
- ``--partitions N`` (cluster): the AGENT_TASKS leader is cut off the network for 12 s while
  it runs on. The nodes run in network namespaces of their own for that (root only; else
  the row says why it was skipped); every connection PINGs each second, so the cut-off
  node's clients move to the other two.
- ``--leader-kills N`` (cluster): SIGKILL the AGENT_TASKS leader N times and print the
  distribution of the recoveries (see :mod:`agentlab.chaos.recovery`).

What "exactly once in effect" means here, and why it holds
----------------------------------------------------------
Delivery is at least once: JetStream redelivers a task whose ack did not arrive within
``ack_wait``, and a SIGKILL can fall anywhere. Each task's handler (``effect_handler``,
run by every worker) performs one side effect keyed by the task id: a KV ``create`` of
``CHAOS_EFFECTS[task_id]``. A create is atomic on the server: the first one stores the
key, every later one is refused. Around it the Agent keeps its own record,
``TASK_LEDGER["chaos." + task_id]`` (append-only: also first-wins), written before the ack;
the server announces the completion when it stores that record::

    handler: create CHAOS_EFFECTS[id]   agent: record TASK_LEDGER[org.id] (announced)   ack

A SIGKILL of the agent between any two of these steps is safe:

- before the effect: nothing happened; the redelivery runs the handler, which applies it.
- after the effect, before the ledger: the redelivery runs the handler again; its create
  is refused, so the handler reports the effect that is there ("suppressed") and the
  agent records it. Applied once.
- after the ledger, before the ack: the redelivery finds the ledger entry and is acked
  without running the handler (the Agent's ``acked_from_ledger``).
- a handler still running when its task is redelivered to another worker (it outlived
  ``ack_wait``): both try the create, the server lets one win.

A SIGKILL of the server is safe because every step is a request the server acknowledges
only once it is on disk (``sync_interval: always``), and every client retries what was not
acknowledged: the publisher resends a task with the same ``Nats-Msg-Id`` (the stream drops
it if the first copy was stored), the handler repeats its create (a refusal of *its own*
earlier create, whose reply was lost, is recognised by the attempt id stored in the
value), a lost ack means a redelivery, which the ledger answers.

The server sends a task before it has stored that it did, so a SIGKILL in that moment
makes the restarted server hand the task out again as a *first* delivery
(``num_delivered`` 1), its ack forgotten too ("first deliveries repeated" in the table).
The Agent's default pre-check ("auto") reads the ledger for every task stored before its
connection's latest (re)connect, so a task already recorded is acked, not run again.

Handler runs, not only effects
------------------------------
The create keeps the effect single whatever the agent does, so counting effects alone
would not notice an agent that runs a recorded task again. Every run therefore logs
where a non-idempotent handler would act, and :mod:`agentlab.chaos.checks` explains each
repeated run per task id: one that began after the ledger had the task is a failure
("run again after recorded", must be 0; ``--ledger-precheck redeliveries`` shows it).
A task handed out again while its earlier run still works, unrecorded (its ack wait ran
out during a server outage, or the restarted server forgot the delivery), must not run
next to it: the Agent's lease (org/leases.py) makes the repeat wait, and a repeat that
began while an earlier run was alive fails the suite too ("run again while first run
alive", from the runs' start and end times and the SIGKILLs). One kind of repeat remains
that nothing recorded can prevent and an idempotent effect must absorb, and the table
counts it: the earlier run's agent was SIGKILLed after acting and before recording, and
the task ran again once that run's lease expired ("run again after first run died").

So the effect store is the source of truth, and the checker does not trust it blindly:
the workers' logs live outside the server (a SIGKILL does not lose what a process has
written). A task whose successful creates name two different attempts was applied twice,
whatever the server kept. By default nats-server fsyncs every two minutes, and although a
SIGKILL of the process alone leaves its unsynced writes with the kernel (``--no-sync``
runs end with the same zeros), a machine crash would lose acknowledged writes; these
checks are where it would show.

Redeliveries are the server's count (each consumer's deliveries minus its tasks).
Duplicates suppressed are counted in two places: the effect store refusing a re-run
(exact, from the workers' logs) and the ledger answering a delivery without running
the handler (the workers' counters, saved every 0.25 s: a SIGKILL loses the last interval).
Recovery after a server restart is the time from the ``restart()`` call to the first task
completed after it (a task's completion time is when the server stored its ledger entry);
the longest gap is the longest time between two consecutive completions.

``--cluster`` runs the same on agentlab.cluster's three local nodes, with every stream and
bucket replicated three times: the first server fault SIGKILLs the node that leads
AGENT_TASKS, the second a random node, each restarted on its store. There a write is
acknowledged once two nodes have it, so a node's SIGKILL loses nothing acknowledged.
"""

from __future__ import annotations

from .cli import build_parser, main
from .config import ChaosConfig, Restart
from .effects import (
    EFFECTS_BUCKET,
    HANDLER,
    LOG_DIR_ENV,
    ORG,
    STATS_BUCKET,
    ChaosFailure,
    effect_handler,
)
from .report import ChaosReport
from .suite import ChaosRun, run
from .targets import ClusterServers, SingleServer

__all__ = [
    "EFFECTS_BUCKET",
    "HANDLER",
    "LOG_DIR_ENV",
    "ORG",
    "STATS_BUCKET",
    "ChaosConfig",
    "ChaosFailure",
    "ChaosReport",
    "ChaosRun",
    "ClusterServers",
    "Restart",
    "SingleServer",
    "build_parser",
    "effect_handler",
    "main",
    "run",
]

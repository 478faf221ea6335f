"""The figures of one fault-suite run, and the table and verdict that print them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from .config import ChaosConfig, Fault, Restart
from .recovery import add_fault_rows


@dataclass
class ChaosReport:
    config: ChaosConfig
    tasks: int = 0
    completed: int = 0
    dead_lettered: int = 0
    dead_lettered_after_effect: int = 0
    lost: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    after_effect: list[str] = field(default_factory=list)
    redeliveries: int = 0
    suppressed_by_effect_store: int = 0
    suppressed_by_ledger: int = 0
    handler_runs: int = 0
    acting_runs: int = 0             # runs that reached the task's side effect
    # A run that reached the effect of a task whose ledger entry existed before it began:
    # the agent should have acked that delivery from the ledger. Must be empty.
    ran_after_record: list[str] = field(default_factory=list)
    # A run that began while an earlier run of its task was still alive (neither ended nor
    # SIGKILLed): the agent should have waited for that run's lease. Must be empty.
    rerun_while_alive: list[str] = field(default_factory=list)
    rerun_after_death: int = 0       # the earlier run's agent was SIGKILLed before recording
    rerun_unrecorded: int = 0        # the earlier runs ended, alive, without their record
    lease_waits: int = 0             # deliveries that waited for a live run's lease
    leases_lost: int = 0             # live runs whose lease expired (silent for a lease TTL)
    lease_naks: int = 0              # of those, nak'ed: the run was quiet past ack_wait (hung)
    forgotten_deliveries: int = 0
    publish_retries: int = 0
    agent_kills: int = 0
    unexpected_exits: int = 0
    restarts: list[Restart] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)  # pauses, partitions, leader kills
    longest_gap: float = 0.0
    longest_gap_at: float = 0.0
    duration: float = 0.0
    started: float = 0.0
    letter_reasons: Counter = field(default_factory=Counter)
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.applied_twice or self.ran_after_record
                    or self.rerun_while_alive or self.problems) \
            and self.completed + self.dead_lettered == self.tasks

    def to_table(self) -> Table:
        cfg = self.config
        table = Table(title=f"Fault suite: {self.tasks:,} tasks, {len(cfg.roles)} roles × "
                            f"{cfg.workers_per_role} agent processes"
                            + (", 3-node cluster" if cfg.cluster else "")
                            + (f", ledger pre-check {cfg.ledger_precheck!r}"
                               if cfg.ledger_precheck != "auto" else ""),
                      title_justify="left")
        table.add_column("Figure")
        table.add_column("Value", justify="right")
        table.add_column("Note")
        good, bad = "[green]", "[bold red]"
        table.add_row("tasks published", f"{self.tasks:,}",
                      f"{self.publish_retries} publish retries (same Nats-Msg-Id)")
        table.add_row("completed", f"{self.completed:,}", "effect applied once, in the ledger")
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.letter_reasons.items()))
        table.add_row("dead-lettered", f"{self.dead_lettered:,}",
                      f"with a reason ({reasons or 'none'}); "
                      + (f"1 in {cfg.fail_every} fails by design" if cfg.fail_every
                         else "none fails by design"))
        if self.dead_lettered_after_effect:
            table.add_row("  after its effect", str(self.dead_lettered_after_effect),
                          "applied once, then out of attempts (counted as completed if the "
                          "ledger has it); a redrive does not repeat the effect")
            for line in self.after_effect[:3]:
                table.add_row("", "", f"[dim]{line}")
        table.add_row("lost", f"{good if not self.lost else bad}{len(self.lost)}",
                      "neither completed nor dead-lettered")
        table.add_row("applied twice", f"{good if not self.applied_twice else bad}"
                      f"{len(self.applied_twice)}", "two successful creates of one effect")
        table.add_row("redeliveries", f"{self.redeliveries:,}",
                      "consumer deliveries minus tasks (server's count)")
        table.add_row("duplicates suppressed",
                      f"{self.suppressed_by_effect_store + self.suppressed_by_ledger:,}",
                      f"{self.suppressed_by_effect_store} re-runs refused by the effect store, "
                      f"{self.suppressed_by_ledger} deliveries acked from the ledger")
        self._add_run_rows(table, good, bad)
        table.add_row("agent processes SIGKILLed", str(self.agent_kills),
                      f"every ~{cfg.kill_every:g} s, restarted at once"
                      + (f"; {self.unexpected_exits} exited on their own"
                         if self.unexpected_exits else ""))
        table.add_row("server SIGKILLs", str(len(self.restarts)),
                      "restarted on the same store dir and port"
                      + (", one node of 3 at a time" if cfg.cluster else ""))
        for r in self.restarts:
            rec = "never" if r.recovery is None else f"{r.recovery:.2f} s"
            colour = good if r.recovery is not None and r.recovery < 2.0 else bad
            table.add_row(f"  recovery after restart {r.number}", f"{colour}{rec}",
                          f"{r.label}: restart() to first completion (target < 2 s); "
                          f"killed at +{r.killed_at - self.started:.1f} s, down "
                          f"{r.restart_called - r.killed_at:.2f} s, server start "
                          f"{r.start_seconds:.2f} s")
        add_fault_rows(self, table, good, bad)
        table.add_row("longest gap in processing", f"{self.longest_gap:.2f} s",
                      f"between two completions, at +{self.longest_gap_at:.1f} s")
        table.add_row("duration", f"{self.duration:.1f} s", "")
        for problem in self.problems[:10]:
            table.add_row("[bold red]problem", "", problem)
        return table

    def _add_run_rows(self, table: Table, good: str, bad: str) -> None:
        table.add_row("handler runs", f"{self.handler_runs:,}",
                      f"from the workers' own logs; {self.acting_runs:,} reached the effect")
        twice = self.ran_after_record
        table.add_row("  run again after recorded", f"{good if not twice else bad}{len(twice)}",
                      "reached the effect of a task the ledger already had: a handler "
                      "whose effect is not idempotent would have acted twice")
        for line in twice[:3]:
            table.add_row("", "", f"[dim]{line}")
        alive = self.rerun_while_alive
        table.add_row("  run again while first run alive", f"{good if not alive else bad}"
                      f"{len(alive)}", "handed out again (ack wait ran out, or a restarted "
                      "server forgot the delivery) and run next to the earlier run instead "
                      "of waiting for its lease (goal 0)")
        for line in alive[:3]:
            table.add_row("", "", f"[dim]{line}")
        table.add_row("  waited for a live run's lease", f"{self.lease_waits:,}",
                      f"deliveries whose task another run held (lease_ttl "
                      f"{self.config.lease_seconds()} s): acked from its record, or run once "
                      "its lease expired (the workers' counters)"
                      + (f"; {self.lease_naks} nak'ed, their run quiet past ack_wait (hung?)"
                         if self.lease_naks else "")
                      + (f"; [bold red]{self.leases_lost} leases lost[/] by live runs"
                         if self.leases_lost else ""))
        table.add_row("  run again after first run died", f"{self.rerun_after_death:,}",
                      "expected: the earlier run's agent was SIGKILLed after the effect, "
                      "before the ledger had the task; its lease expired, the task ran again")
        if self.rerun_unrecorded:
            table.add_row("  run again, first run unrecorded", f"{self.rerun_unrecorded:,}",
                          "the earlier run ended and its agent lived, but its ledger record "
                          "was not written before the next run began")
        table.add_row("  first deliveries repeated", f"{self.forgotten_deliveries:,}",
                      "tasks run twice as a first delivery: a restarted server forgot it had "
                      "handed them out (a repeat of a live run waits for its lease, of a "
                      "recorded one is acked from the ledger: these followed a death)")

    def verdict(self) -> str:
        if self.ok:
            return (f"[bold green]PASS[/]: {self.tasks:,} tasks, zero lost, zero applied "
                    "twice, no handler run again after its task was recorded, 0 repeats "
                    "while the first run was alive "
                    f"({self.rerun_after_death} after its instance died).")
        return (f"[bold red]FAIL[/]: {len(self.lost)} lost, {len(self.applied_twice)} applied "
                f"twice, {len(self.ran_after_record)} run again after recorded, "
                f"{len(self.rerun_while_alive)} repeats while the first run was alive, "
                f"{len(self.problems)} other problems (logs in {self.workdir}).")

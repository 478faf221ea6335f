"""The isolation audit against live servers: seed 000 leaks, agentlab's two models do not."""

from __future__ import annotations

import asyncio

import pytest

from agentlab import Tenants
from agentlab.org import reference_assets
from agentlab.programs.cli import main
from agentlab.programs.tenant_audit import ACTIONS, aaudit, audit, audit_models


@pytest.fixture(scope="module")
def reports():
    return {report.model: report for report in audit_models()}


@pytest.mark.parametrize("model", ["accounts", "users"])
def test_agentlab_models_deny_everything_across_and_allow_everything_within(reports, model):
    report = reports[model]
    assert len(report.cells) == 4 * len(ACTIONS)
    for cell in report.cells:
        assert cell.allowed is (cell.actor == cell.target), (cell, report.verdict())
    assert report.ok and report.leaks == [] and report.own_denied == []
    assert "✓ LEAK" not in str(report)


def test_seed_000_verbatim_shows_the_leak(reports):
    report = reports["seed000"]
    leaks = {(c.actor, c.target, c.action) for c in report.leaks}
    # The hole: genbrain.agents.* carries no org, so both ways, both verbs.
    assert leaks == {("acme", "globex", "publish"), ("globex", "acme", "publish"),
                     ("acme", "globex", "subscribe"), ("globex", "acme", "subscribe")}
    assert report.cell("acme", "globex", "publish").how == \
        "globex received it on genbrain.agents.audit.tasks"
    # And its users cannot use JetStream (no $JS.API) nor answer requests at all.
    assert not report.cell("acme", "acme", "stream info").allowed
    assert "permission denied" in report.cell("acme", "acme", "kv read").how
    assert not report.ok and "✓ LEAK" in str(report)


def test_audit_of_a_running_lab_with_its_own_tenants(monkeypatch):
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)
    tenants = Tenants(["acme", "globex", "initech"], model="users", assets=reference_assets())
    lab = agentlab.start(tenants=tenants, fresh=True, name="audit-test")
    try:
        report = asyncio.run(aaudit(lab.url, tenants, wait=0.15))
        assert report.ok and len(report.cells) == 9 * len(ACTIONS)
        # The audit leaves no probe consumers or canaries behind.
        for name in tenants.names:
            stream = tenants.stream_name(name, "AGENT_TASKS")
            assert lab.js.stream_info(stream).state.messages == 0
            assert lab.js.consumers(stream) == []
    finally:
        lab.close()


def test_audit_reports_a_deliberately_leaky_config():
    """A users-model config with one hole punched in is caught."""
    tenants = Tenants(["acme", "globex"], model="users", assets=reference_assets())
    holey = tenants.config().replace('"genbrain.acme.>",',
                                     '"genbrain.acme.>", "genbrain.*.agents.*.tasks",', 1)
    from agentlab import EmbeddedServer

    with EmbeddedServer(extra_config=holey) as server:
        report = audit(server.url, tenants)
    assert [(c.actor, c.target, c.action) for c in report.leaks] == \
        [("acme", "globex", "publish")]


def test_cli_audit_prints_the_three_matrices(capsys):
    assert main(["audit"]) == 0
    out = capsys.readouterr().out
    for title in ("seed 000's configuration, verbatim", "one NATS account per tenant",
                  "one user per tenant"):
        assert title in out
    assert out.count("✓ LEAK") == 4  # all in seed 000's matrix
    assert "4 LEAKS" in out and out.count("no leaks: every cross-tenant action denied") == 2

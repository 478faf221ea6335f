"""One column spec per report (agentlab.reports.columns): the rich and the HTML rendering of
every report and live view show the same columns, in the same order, with the same text."""

from __future__ import annotations

import html
import re

import pytest

from agentlab.observe.html import consumers_html, streams_html
from agentlab.observe.observer import _changes
from agentlab.observe.snapshots import StateSnapshot
from agentlab.observe.terminal import state_group
from agentlab.reports import columns as spec
from agentlab.reports.columns import (
    AGENTLAB_CONSUMER_COLUMNS,
    CONSUMER_COLUMNS,
    CONSUMER_REPORT_COLUMNS,
    LIVE_CONSUMER_COLUMNS,
    LIVE_STREAM_COLUMNS,
    STREAM_COLUMNS,
    STREAM_REPORT_COLUMNS,
    Column,
)
from agentlab.reports.render import format_count
from agentlab.reports.report import ConsumerReport, ConsumerRow, StreamReport, StreamRow

pytestmark = pytest.mark.unit

TASKS = StreamRow(
    name="AGENT_TASKS", storage="File", placement="", consumers=1, messages=8, bytes=1536,
    lost_messages=0, lost_bytes=0, deleted=0, api_level="0", replicas=("n1*",),
    subjects=("genbrain.agents.*.tasks", "genbrain.board.>"), retention="workqueue",
    first_seq=3, last_seq=10)
CTO = ConsumerRow(
    stream="AGENT_TASKS", name="cto", mode="Pull", ack_policy="Explicit", ack_wait=30.0,
    ack_pending=1, redelivered=0, unprocessed=6, ack_floor=2, api_level="0", cluster=(),
    stream_messages=8, delivered=4, filter_subjects=("genbrain.agents.cto.tasks",))


def streams() -> StreamReport:
    return StreamReport(rows=(TASKS,))


def consumers(extras: bool = True) -> ConsumerReport:
    return ConsumerReport(stream="AGENT_TASKS", stream_messages=8, rows=(CTO,), extras=extras)


def state(**changes) -> StateSnapshot:
    return StateSnapshot(streams=streams(), consumers=(consumers(),),
                         rates={("AGENT_TASKS", "cto"): (0, 2, 1)}, **changes)


def rich_headers(table) -> list[str]:
    return [str(column.header) for column in table.columns]


def rich_rows(table) -> list[list[str]]:
    cells = [[str(cell) for cell in column.cells] for column in table.columns]
    return [list(row) for row in zip(*cells, strict=True)]


def html_headers(page: str, table_class: str = "") -> list[str]:
    found = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", _table(page, table_class))
    return [html.unescape(header) for header in found]


def html_rows(page: str, table_class: str = "") -> list[list[str]]:
    body = _table(page, table_class).split("<tbody>", 1)[1]
    return [[_plain(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def _table(page: str, table_class: str) -> str:
    start = page.index(f"<table class='{table_class}'>" if table_class else "<table")
    return page[start:page.index("</table>", start)]


def _plain(cell: str) -> str:
    # The HTML's sparkline is a picture where the terminal's is characters: compare the rest.
    cell = re.sub(r"<svg.*?</svg>", "", cell)
    return html.unescape(re.sub(r"<[^>]+>", "", cell.replace("<br>", "\n")))


@pytest.mark.parametrize("report, headers", [
    (streams(), STREAM_REPORT_COLUMNS),
    (consumers(extras=False), CONSUMER_REPORT_COLUMNS),
    (consumers(), CONSUMER_REPORT_COLUMNS + AGENTLAB_CONSUMER_COLUMNS),
], ids=["stream report", "consumer report", "consumer report with extras"])
def test_a_report_shows_the_same_columns_in_rich_and_html(report, headers):
    table, page = report.to_table(), report._repr_html_()
    assert rich_headers(table) == html_headers(page) == list(report.columns) == list(headers)
    assert rich_rows(table) == html_rows(page) == [list(cells) for cells in report.table_cells()]


def test_the_live_views_show_the_same_columns_in_rich_and_html():
    snap = state()
    streams_table, consumers_table = state_group(snap).renderables
    assert rich_headers(streams_table) == html_headers(streams_html(snap)) == \
        list(LIVE_STREAM_COLUMNS)
    assert rich_headers(consumers_table) == html_headers(consumers_html(snap)) == \
        list(LIVE_CONSUMER_COLUMNS) + ["Acks/s (60 s)"]
    assert rich_rows(streams_table) == html_rows(streams_html(snap))
    text = rich_rows(consumers_table)[0]
    assert text[:-1] == html_rows(consumers_html(snap))[0][:-1]
    assert text[-1].endswith(" 1/s") and html_rows(consumers_html(snap))[0][-1] == " 1/s"


def test_a_column_reads_the_same_in_the_report_and_the_live_view():
    report_cells = dict(zip(consumers().columns, consumers().table_cells()[0], strict=True))
    live = dict(zip(html_headers(consumers_html(state())), html_rows(consumers_html(state()))[0],
                    strict=True))
    for header in set(report_cells) & set(live):
        assert report_cells[header] == live[header], header
    assert live["Unprocessed"] == "6 / 75%" and live["Oldest Unprocessed"] == "—"


def test_a_column_added_to_the_spec_shows_in_both_renderings(monkeypatch):
    span = Column("Seq Span", lambda row: row.last_seq - row.first_seq, format_count,
                  numeric=True, tip="Sequences from the first stored to the last")

    class Wider(StreamReport):
        def table_columns(self):
            return super().table_columns() + (span,)

    wider = Wider(rows=(TASKS,))
    assert rich_headers(wider.to_table()) == html_headers(wider._repr_html_()) == \
        [*STREAM_REPORT_COLUMNS, "Seq Span"]
    assert rich_rows(wider.to_table())[0][-1] == html_rows(wider._repr_html_())[0][-1] == "7"

    monkeypatch.setitem(STREAM_COLUMNS, "Seq Span", span)
    monkeypatch.setattr(spec, "LIVE_STREAM_COLUMNS", ("Seq Span", *LIVE_STREAM_COLUMNS))
    snap = state()
    streams_table, _ = state_group(snap).renderables
    assert rich_headers(streams_table) == html_headers(streams_html(snap)) == \
        ["Seq Span", *LIVE_STREAM_COLUMNS]
    assert rich_rows(streams_table)[0][0] == html_rows(streams_html(snap))[0][0] == "7"


def test_watched_columns_flash_in_both_renderings():
    before = state()
    more = StreamRow(**{**TASKS.__dict__, "messages": 13, "last_seq": 15})
    changed, deltas = _changes(before, StreamReport(rows=(more,)), [consumers()])
    assert changed == {("AGENT_TASKS", "Messages"), ("AGENT_TASKS", "Last Seq")}
    assert deltas == {("AGENT_TASKS", "Messages"): 5, ("AGENT_TASKS", "Last Seq"): 5}
    assert {c.header for c in STREAM_COLUMNS.values() if c.watch} >= {"Messages", "Last Seq"}
    assert not STREAM_COLUMNS["Stream"].watch and CONSUMER_COLUMNS["Ack Pending"].watch
    after = StateSnapshot(streams=StreamReport(rows=(more,)), consumers=(consumers(),),
                          changed=frozenset(changed), deltas=deltas)
    streams_table, _ = state_group(after).renderables
    row = dict(zip(rich_headers(streams_table), rich_rows(streams_table)[0], strict=True))
    assert row["Messages"] == "13 (+5)" and row["Bytes"] == "1.5 KiB"
    page = streams_html(after)
    assert "<td class='n al-chg' style='text-align:right'>13<span class='al-up'>+5</span>" in page

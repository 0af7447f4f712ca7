"""
The batches page's HTML, rendered on the server (no script, no build step).

Every value from the service or the request is escaped; links into Airflow's UI open in the top window
(the page itself is shown in an iframe of Airflow's navigation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.cost.recorded import RecordedCost
from airflow_provider_dashscope_batch.sharding.creator import Creator, creator_of
from airflow_provider_dashscope_batch.ui.jobs import JobBatch, JobGroup, group_by_job

__all__ = ["Row", "confirm_page", "detail_page", "list_page", "message_page", "progress"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1a202c;
font-size:14px}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e2e8f0;padding:6px 8px;
text-align:left;vertical-align:top}th{background:#f7fafc;font-weight:600}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:12px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#4a5568}
input,select,button{font-size:13px;padding:4px 6px}button{cursor:pointer}
.bar{width:160px;height:10px;background:#edf2f7;border-radius:5px;overflow:hidden;display:flex}
.bar .ok{background:#38a169}.bar .bad{background:#e53e3e}.muted{color:#718096}
.status{padding:1px 6px;border-radius:8px;font-size:12px;background:#e2e8f0}
.status.completed{background:#c6f6d5}.status.failed,.status.expired{background:#fed7d7}
.status.in_progress,.status.validating,.status.finalizing{background:#bee3f8}
.status.cancelling,.status.cancelled{background:#feebc8}
.danger{background:#e53e3e;color:#fff;border:0;border-radius:4px;padding:6px 12px}
a{color:#2b6cb0}dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px}dt{font-weight:600}
.pager{margin-top:12px;display:flex;gap:16px}
tr.job td{background:#f0f4f8;border-top:2px solid #cbd5e0}tr.in-job td:first-child{padding-left:24px}
tr.current td{background:#fefcbf}.place{font-size:12px;color:#2c5282}
"""


@dataclass(frozen=True)
class Row:
    """One batch as the page shows it: the batch in its job and what the user may do with it."""

    item: JobBatch
    can_cancel: bool

    @property
    def batch(self) -> Batch:
        """The batch."""
        return self.item.batch


def progress(batch: Batch) -> tuple[int, int, int]:
    """(completed, failed, total) requests of the batch (zeros before the service counts them)."""
    counts = batch.request_counts
    if counts is None:
        return 0, 0, 0
    return counts.completed or 0, counts.failed or 0, counts.total or 0


def _time(seconds: int | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _finished(batch: Batch) -> int | None:
    return batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at


def _bar(batch: Batch) -> str:
    return _counts_bar(*progress(batch))


def _counts_bar(done: int, failed: int, total: int) -> str:
    if not total:
        return '<span class="muted">no counts yet</span>'
    ok = 100 * done / total
    bad = 100 * failed / total
    label = f"{done:,} of {total:,} done" + (f", {failed:,} failed" if failed else "")
    return (
        f'<div class="bar" role="progressbar" aria-valuenow="{done + failed}" aria-valuemax="{total}" '
        f'title="{escape(label)}"><div class="ok" style="width:{ok:.1f}%"></div>'
        f'<div class="bad" style="width:{bad:.1f}%"></div></div><span class="count">{escape(label)}</span>'
    )


def _task_url(airflow_root: str, creator: Creator) -> str:
    dag, run, task = (quote(v, safe="") for v in (creator.dag_id, creator.run_id, creator.task_id))
    url = f"{airflow_root}/dags/{dag}/runs/{run}/tasks/{task}"
    return url + (f"/mapped/{creator.map_index}" if creator.map_index >= 0 else "")


def _creator_cell(airflow_root: str, batch: Batch) -> str:
    creator = creator_of(batch)
    if creator is None:
        return '<span class="muted">not created by this Airflow</span>'
    dag, run = quote(creator.dag_id, safe=""), quote(creator.run_id, safe="")
    mapped = f" [{creator.map_index}]" if creator.map_index >= 0 else ""
    return (
        f'<a target="_top" href="{escape(f"{airflow_root}/dags/{dag}")}">{escape(creator.dag_id)}</a> / '
        f'<a target="_top" href="{escape(f"{airflow_root}/dags/{dag}/runs/{run}")}">'
        f"{escape(creator.run_id)}</a> / "
        f'<a target="_top" href="{escape(_task_url(airflow_root, creator))}">'
        f"{escape(creator.task_id)}{mapped}</a>"
    )


#: Why the actual cost is not shown: the batch object carries no usage; the transfer records it.
_NO_ACTUAL = (
    "Known once a results transfer in the batch's DAG run has read its output (and you may read that "
    "run's XComs)"
)
Costs = Mapping[str, RecordedCost]


def _actual(cost: RecordedCost | None) -> str:
    """``actual 1.2300 CNY`` with its tokens as a tooltip, or ``actual —`` while unknown."""
    if cost is None:
        return f'<span class="muted actual" title="{escape(_NO_ACTUAL)}">actual —</span>'
    title = f"at the batch price, recorded by the results transfer: {cost.tokens()}"
    if not cost.complete:
        title += "; some model had no price in the table"
    return f'<span class="actual" title="{escape(title)}">actual {escape(cost.shown())}</span>'


def _cost_cell(item: JobBatch, costs: Costs) -> str:
    """The estimate the batch was created under (a shard's is the whole job's) and the actual cost."""
    figure = item.estimated
    estimate = '<span class="muted">—</span>'
    if figure is not None:
        whole = " (whole job)" if item.creator is not None and item.creator.shard is not None else ""
        estimate = (
            f'<span class="estimate" title="estimated at create, {escape(figure.basis)} basis">'
            f"{escape(figure.shown())}</span>{whole}"
        )
    return f"est. {estimate}<br>{_actual(costs.get(item.batch.id))}"


def _job_query(job: tuple[str, str, str, int]) -> dict[str, str]:
    return dict(zip(("dag_id", "run_id", "task_id", "map_index"), (*job[:3], str(job[3])), strict=True))


def _cancellable(batch: Batch) -> bool:
    return not batch.status.is_terminal and batch.status != BatchStatus.CANCELLING


def _cancel_link(base: str, conn_id: str, batch: Batch) -> str:
    return f'<a class="cancel" href="{escape(_detail_url(base, conn_id, batch.id, "/cancel"))}">Cancel…</a>'


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _detail_url(base: str, conn_id: str, batch_id: str, suffix: str = "") -> str:
    return f"{base}/batches/{quote(conn_id, safe='')}/{quote(batch_id, safe='')}{suffix}"


def list_page(
    *,
    base: str,
    airflow_root: str,
    connections: list[str],
    filters: dict[str, str],
    rows: list[Row],
    costs: Costs,
    hidden: int,
    next_query: dict[str, str] | None,
    first_query: dict[str, str] | None,
) -> str:
    """The list: filters, one row per visible batch, and the pager."""
    conn_id = filters.get("conn_id", "")
    conn_options = "".join(
        f'<option value="{escape(c)}"{" selected" if c == conn_id else ""}>{escape(c)}</option>'
        for c in connections
    )
    status_options = '<option value="">any</option>' + "".join(
        f'<option value="{s.value}"{" selected" if filters.get("status") == s.value else ""}>'
        f"{s.value}</option>"
        for s in BatchStatus
    )

    def field(name: str, label: str, kind: str = "text", size: int = 18) -> str:
        value = escape(filters.get(name, ""))
        return f'<label>{label}<input type="{kind}" name="{name}" value="{value}" size="{size}"></label>'

    keep = "".join(
        f'<input type="hidden" name="{name}" value="{escape(filters[name])}">'
        for name in ("dag_id", "run_id", "task_id", "map_index")
        if filters.get(name)
    )
    form = (
        f'<form class="filters" method="get" action="{escape(base)}/">'
        f'<label>Connection<select name="conn_id">{conn_options}</select></label>'
        f"{field('ds_name', 'Name')}"
        f'<label>Status<select name="status">{status_options}</select></label>'
        f"{field('input_file_ids', 'Input file ids (comma-separated)', size=28)}"
        f"{field('create_after', 'Created after', 'date', 10)}"
        f"{field('create_before', 'Created before', 'date', 10)}"
        f'{keep}<button type="submit">Filter</button></form>'
    )
    task_filter = ""
    if filters.get("dag_id"):
        names = " / ".join(escape(filters[n]) for n in ("dag_id", "run_id", "task_id") if filters.get(n))
        clear = {k: v for k, v in filters.items() if k not in ("dag_id", "run_id", "task_id", "map_index")}
        task_filter = (
            f'<p>Batches of <b>{names}</b> only. <a href="{escape(base)}/?{escape(urlencode(clear))}">'
            "Show all</a></p>"
        )
    by_batch = {row.batch.id: row for row in rows}
    body_rows = []
    for group in group_by_job([row.item for row in rows]):
        members = [by_batch[item.batch.id] for item in group.batches]
        if group.job is not None and len(members) > 1:
            body_rows.append(_job_row(base, filters, group, costs))
        for row in members:
            body_rows.append(_batch_row(base, airflow_root, conn_id, row, costs, in_job=len(members) > 1))
    table = (
        "<table><thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th>Created (UTC)</th>"
        "<th>Finished (UTC)</th><th>Created by</th><th>Cost</th><th></th></tr></thead><tbody>"
        + ("".join(body_rows) or '<tr><td colspan="8" class="muted">No batches to show.</td></tr>')
        + "</tbody></table>"
    )
    note = (
        f'<p class="muted">{hidden} batch(es) on this page of the service\'s list are not shown: '
        "you have no access to their DAG (or to the connection, for batches of no known DAG).</p>"
        if hidden
        else ""
    )
    pager = []
    if first_query is not None:
        pager.append(f'<a href="{escape(base)}/?{escape(urlencode(first_query))}">First page</a>')
    if next_query is not None:
        pager.append(f'<a class="next" href="{escape(base)}/?{escape(urlencode(next_query))}">Next page</a>')
    return _page(
        "DashScope batches",
        f"<h1>DashScope batches</h1>{form}{task_filter}{table}{note}"
        f'<div class="pager">{"".join(pager)}</div>',
    )


def _batch_row(base: str, airflow_root: str, conn_id: str, row: Row, costs: Costs, *, in_job: bool) -> str:
    batch = row.batch
    name = str((batch.metadata or {}).get("ds_name") or "")
    place = f'<br><span class="place">{escape(row.item.place)}</span>' if row.item.place else ""
    action = _cancel_link(base, conn_id, batch) if row.can_cancel and _cancellable(batch) else ""
    css = ' class="in-job"' if in_job else ""
    return (
        f'<tr data-batch-id="{escape(batch.id)}"{css}>'
        f'<td><a href="{escape(_detail_url(base, conn_id, batch.id))}">{escape(batch.id)}</a>'
        f'<br><span class="muted">{escape(name)}</span>{place}</td>'
        f'<td><span class="status {escape(batch.status.value)}">{escape(batch.status.value)}</span></td>'
        f"<td>{_bar(batch)}</td>"
        f"<td>{_time(batch.created_at)}</td><td>{_time(_finished(batch))}</td>"
        f"<td>{_creator_cell(airflow_root, batch)}</td><td>{_cost_cell(row.item, costs)}</td>"
        f"<td>{action}</td></tr>"
    )


def _job_row(base: str, filters: dict[str, str], group: JobGroup, costs: Costs) -> str:
    """
    The heading row of a job's batches: what it is, its progress (shards), its estimate, its actual cost
    (summed when every batch's on the page is known), a filter link.
    """
    assert group.job is not None
    dag_id, run_id, task_id, map_index = group.job
    kind = "shards" if group.sharded else "rounds"
    counts = [progress(b.batch) for b in group.batches]
    bar = _counts_bar(*(sum(c[i] for c in counts) for i in range(3))) if group.sharded else ""
    figure = group.estimated
    estimate = f" · est. {escape(figure.shown())}" if figure is not None else ""
    spent = RecordedCost.total(costs.get(b.batch.id) for b in group.batches)
    if spent is not None:
        estimate += f' · <span class="actual">actual {escape(spent.shown())}</span>'
    only = {**{k: v for k, v in filters.items() if k == "conn_id"}, **_job_query(group.job)}
    mapped = f" [{map_index}]" if map_index >= 0 else ""
    return (
        f'<tr class="job" data-job="{escape(f"{dag_id}/{run_id}/{task_id}/{map_index}")}"><td colspan="8">'
        f"Job <b>{escape(task_id)}{mapped}</b> of {escape(dag_id)} / {escape(run_id)}: "
        f"{len(group.batches)} batches ({kind}) on this page{estimate} "
        f'<a class="job-filter" href="{escape(base)}/?{escape(urlencode(only))}">only this job</a>'
        f"{f'<div>{bar}</div>' if bar else ''}</td></tr>"
    )


def _round_row(base: str, conn_id: str, item: JobBatch, current: bool, costs: Costs) -> str:
    batch = item.batch
    css = ' class="current"' if current else ""
    return (
        f'<tr data-round-batch-id="{escape(batch.id)}"{css}><td>{escape(item.place)}</td>'
        f'<td><a href="{escape(_detail_url(base, conn_id, batch.id))}">{escape(batch.id)}</a></td>'
        f'<td><span class="status {escape(batch.status.value)}">{escape(batch.status.value)}</span></td>'
        f"<td>{_bar(batch)}</td><td>{_time(batch.created_at)}</td><td>{_cost_cell(item, costs)}</td></tr>"
    )


def _rounds_section(
    base: str, conn_id: str, current: Batch, rounds: list[JobBatch] | None, costs: Costs
) -> str:
    """A batch's job: its batches (shards, rounds) with their progress, estimates and actual costs."""
    if rounds is None:
        return ""
    rows = "".join(_round_row(base, conn_id, item, item.batch.id == current.id, costs) for item in rounds)
    figure = JobGroup(None, tuple(rounds)).estimated
    total = ""
    if figure is not None:
        total = f"<p>Estimated cost of the job: <b>{escape(figure.shown())}</b> ({escape(figure.basis)})</p>"
    spent = RecordedCost.total(costs.get(item.batch.id) for item in rounds)
    if spent is not None:
        total += (
            f'<p class="job-actual">Actual cost of the job: <b>{escape(spent.shown())}</b> '
            f"({escape(spent.tokens())})</p>"
        )
    return (
        f"<h2>Rounds</h2>{total}"
        "<table><thead><tr><th>Shard / round</th><th>Batch</th><th>Status</th><th>Progress</th>"
        f"<th>Created (UTC)</th><th>Cost</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def detail_page(
    *,
    base: str,
    airflow_root: str,
    conn_id: str,
    item: JobBatch,
    can_cancel: bool,
    rounds: list[JobBatch] | None,
    costs: Costs,
) -> str:
    """One batch: status, progress, cost, its job's rounds, times, files, errors, metadata and its creator."""
    batch = item.batch
    times = "".join(
        f"<dt>{label}</dt><dd>{_time(value)}</dd>"
        for label, value in (
            ("Created", batch.created_at),
            ("In progress", batch.in_progress_at),
            ("Finalizing", batch.finalizing_at),
            ("Completed", batch.completed_at),
            ("Failed", batch.failed_at),
            ("Expired", batch.expired_at),
            ("Cancelling", batch.cancelling_at),
            ("Cancelled", batch.cancelled_at),
            ("Expires", batch.expires_at),
        )
        if value
    )
    files = "".join(
        f"<dt>{label}</dt><dd><code>{escape(value)}</code></dd>"
        for label, value in (
            ("Input file", batch.input_file_id),
            ("Output file", batch.output_file_id),
            ("Error file", batch.error_file_id),
        )
        if value
    )
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    error_rows = "".join(
        f"<tr><td>{escape(str(e.code or ''))}</td><td>{escape(str(e.message or ''))}</td>"
        f"<td>{escape(str(e.param or ''))}</td>"
        f"<td>{escape('' if e.line is None else str(e.line))}</td></tr>"
        for e in errors
    )
    metadata = "".join(
        f"<dt>{escape(str(k))}</dt><dd><code>{escape(_shown_metadata(str(k), v))}</code></dd>"
        for k, v in sorted((batch.metadata or {}).items())
    )
    cancel = ""
    if can_cancel and _cancellable(batch):
        cancel = f"<p>{_cancel_link(base, conn_id, batch)}</p>"
    back = f'<p><a href="{escape(base)}/?{escape(urlencode({"conn_id": conn_id}))}">All batches</a></p>'
    return _page(
        batch.id,
        f"{back}<h1>{escape(batch.id)}</h1>"
        f'<p><span class="status {escape(batch.status.value)}">{escape(batch.status.value)}</span> '
        f"{_bar(batch)}</p>{cancel}"
        f"<dl><dt>Connection</dt><dd>{escape(conn_id)}</dd><dt>Endpoint</dt>"
        f"<dd>{escape(batch.endpoint or '')}</dd><dt>Completion window</dt>"
        f"<dd>{escape(batch.completion_window or '')}</dd><dt>Created by</dt>"
        f"<dd>{_creator_cell(airflow_root, batch)}</dd>"
        f"{f'<dt>In its job</dt><dd>{escape(item.place)}</dd>' if item.place else ''}"
        f"<dt>Cost</dt><dd>{_cost_cell(item, costs)}</dd></dl>"
        f"{_rounds_section(base, conn_id, batch, rounds, costs)}"
        f"<h2>Times (UTC)</h2><dl>{times}</dl><h2>Files</h2><dl>{files or '<dt>none</dt><dd></dd>'}</dl>"
        f"<h2>Errors</h2>"
        + (
            "<table><thead><tr><th>Code</th><th>Message</th><th>Param</th><th>Line</th></tr></thead>"
            f"<tbody>{error_rows}</tbody></table>"
            if error_rows
            else '<p class="muted">none</p>'
        )
        + f"<h2>Metadata</h2><dl>{metadata}</dl>",
    )


def _shown_metadata(key: str, value: object) -> str:
    """A metadata value as shown: a finish-callback URL without its token (it vouches for the batch)."""
    text = str(value)
    if key == "ds_batch_finish_callback":
        return text.rsplit("/", 1)[0] + "/…"
    return text


def confirm_page(*, base: str, conn_id: str, batch: Batch, action: str, csrf: str) -> str:
    """The confirmation before a cancel: what it does, and the form that does it."""
    done, failed, total = progress(batch)
    return _page(
        f"Cancel {batch.id}?",
        f"<h1>Cancel batch {escape(batch.id)}?</h1>"
        f"<p>It is <b>{escape(batch.status.value)}</b> with {done:,} of {total:,} requests done"
        f"{f' ({failed:,} failed)' if failed else ''}. Requests finished before the cancellation stay in "
        "its output file and are billed; the rest are not run. This cannot be undone.</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        '<button class="danger" type="submit" name="confirm" value="yes">Yes, cancel this batch</button> '
        f'<a href="{escape(_detail_url(base, conn_id, batch.id))}">No, go back</a></form>',
    )


def message_page(title: str, text: str, base: str | None = None) -> str:
    """A short page with one message (errors, refusals, the cancel's outcome)."""
    back = f'<p><a href="{escape(base)}/">All batches</a></p>' if base is not None else ""
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{back}")

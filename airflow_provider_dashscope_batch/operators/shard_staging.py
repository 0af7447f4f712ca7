"""
How a sharded job stages its shards, and what a kill leaves behind.

:class:`ShardStager` is what the sharded operator
(:class:`~airflow_provider_dashscope_batch.operators.shards.DashScopeShardedBatchOperator`) holds for one try:
each complete shard is matched to an earlier try's batch (by its idempotency key) or file (by its upload
token) or uploaded; files no batch uses are deleted (those that stay are reported for the next try). A kill
(``on_kill``) only sets a flag; the next upload or create stops, and what this try staged is kept for the
next try or, when a user marked the task failed, deleted and cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_dashscope_batch.client import tokenized_filename
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.errors import DashScopeError, NotFoundError
from airflow_provider_dashscope_batch.client.identity import with_generation
from airflow_provider_dashscope_batch.client.oss_input import parse_oss_input
from airflow_provider_dashscope_batch.client.types import FileObject
from airflow_provider_dashscope_batch.operators.shard_oss import OssStaging
from airflow_provider_dashscope_batch.sharding.job import ShardRun, shard_key_base
from airflow_provider_dashscope_batch.triggers.base import task_instance_state
from airflow_provider_dashscope_batch.waiting.late import LateCopies
from airflow_provider_dashscope_batch.waiting.protocol import Outcome, OutcomePolicy

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch
    from airflow_provider_dashscope_batch.operators.rounds import ShardedRound
    from airflow_provider_dashscope_batch.sharding.split import Shard

__all__ = ["CLEANUP_XCOM_KEY", "ShardStager", "TaskKilled"]

#: XCom key of the input files a try could not delete (the next try deletes them).
CLEANUP_XCOM_KEY = "cleanup_pending"
#: How far before the DAG run's ``run_after`` the next try looks for the files of earlier tries.
_LIST_SLACK = timedelta(days=1)


class TaskKilled(AirflowException):
    """The task was killed (``on_kill``) while it split, uploaded or created; it stopped at the next step."""


class ShardStager:
    """
    Staging and kill handling of one try of a sharded job.

    :param policy: Which earlier batches a new try keeps (the operator's outcome policy).
    :param cancel_on_kill: Cancel this try's batches when a user marks the task failed.
    :param retries: The task's retries (a try with none after it deletes the files no batch uses).
    :param log: The operator's logger.
    :param oss: Where the shards are written in OSS instead of uploaded (:mod:`.shard_oss`), if anywhere.
    """

    def __init__(
        self,
        *,
        policy: OutcomePolicy,
        cancel_on_kill: bool,
        retries: int,
        log: Any,
        oss: OssStaging | None = None,
    ) -> None:
        self.policy = policy
        self.cancel_on_kill = cancel_on_kill
        self.retries = retries
        self.log = log
        self.oss = oss
        self.history: dict[str, list[Batch]] = {}  # each shard's batches so far, by key base
        self.created: list[Batch] = []  # batches this try created, for a kill by a user
        self._killed = False  # a plain flag: set from the signal handler, read by the task's own thread

    def kill(self) -> None:
        """Stop at the next step: no upload or create starts after this."""
        self._killed = True
        self.log.warning("Killed: stopping before the next upload or create")

    def stop_if_killed(self) -> None:
        """Raise :class:`TaskKilled` if :meth:`kill` was called."""
        if self._killed:
            raise TaskKilled("The task was killed while it split, uploaded or created shards.")

    def after_kill(self, client: DashScopeClient, context: Context, staged: Sequence[str]) -> None:
        """
        Keep this try's files and batches for the next try, or discard them if a user marked it failed.

        A try with no retry after it deletes the files no batch uses (its batches keep running).

        :param staged: The files this try gave its shards (uploaded or re-used).
        """
        created = [b.id for b in self.created]
        unbatched = [f for f in staged if f not in {b.input_file_id for b in self.created}]
        ti = context["ti"]
        if getattr(ti, "try_number", 1) > self.retries and task_instance_state(ti) != "failed":
            # no try follows to re-use them: the files no batch uses go now, the batches keep running
            self.delete_files(client, context, unbatched)
            return
        if task_instance_state(ti) != "failed":
            self.log.warning(
                "Kept for the next try: %s file(s) without a batch (%s) and %s created batch(es) (%s)",
                len(unbatched),
                ", ".join(unbatched) or "-",
                len(created),
                ", ".join(created) or "-",
            )
            return
        self.delete_files(client, context, unbatched)
        for batch_id in created if self.cancel_on_kill else ():
            self.log.info("Cancelling batch %s: the task was marked failed", batch_id)
            try:
                client.cancel_batch(batch_id)
            except DashScopeError as exc:
                self.log.warning("Could not cancel batch %s: %s", batch_id, exc)

    # ---------------------------------------------------------------------------- staging
    def stored_files(
        self, client: DashScopeClient, context: Context, token: str, in_use: set[str | None]
    ) -> dict[str, FileObject]:
        """
        Input files of this job's earlier tries that no batch uses, by name.

        A shard's file is uploaded under its upload token (the shard's key base, which digests the job,
        the shard's position and its SHA-256), so the name proves which shard's bytes a file holds: a try
        killed between an upload and its create, or one whose cleanup failed, leaves files the next try
        re-uses or deletes.
        """
        dag_run = context.get("dag_run")
        since = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None)
        files: dict[str, FileObject] = {}
        for f in client.list_files(purpose="batch", create_after=since - _LIST_SLACK if since else None):
            if (f.filename or "").startswith(f"{token}-shard-") and f.id not in in_use:
                if f.filename in files:  # a late copy of one upload: keep the first listed
                    self.delete_files(client, context, [f.id])
                else:
                    files[str(f.filename)] = f
        return files

    def plan(
        self,
        client: DashScopeClient,
        token: str,
        shard: Shard,
        earlier: Mapping[str, tuple[int, Batch]],
        stored: dict[str, FileObject],
        staged: list[str],
        replacement: ShardedRound,
    ) -> ShardRun:
        """
        What to do with one shard, decided as soon as it is complete; its spool file is then deleted.

        ``staged`` collects the files given to shards that no batch uses yet (uploaded now or re-used).
        A shard whose earlier batch ended badly and has answers gets its remainder written into
        ``replacement`` (every shard with an earlier batch is counted there) and a run without a file:
        the caller stages the remainders once the round's budget is checked.
        """
        base = shard_key_base(token, shard)
        spooled = Path(shard.uri)
        shard = replace(shard, uri=spooled.name)  # the spool file is gone after this call; its name stays
        try:
            self.stop_if_killed()
            if base in earlier:
                generation, batch = earlier[base]
                history = self.history.get(base, [batch])
                if not batch.status.is_terminal or self.policy.evaluate(batch).outcome is not Outcome.FAIL:
                    replacement.add(shard.index, spooled, history, shard.requests)
                    self.log.info(
                        "Shard %s: re-attaching to batch %s (%s)", shard.index, batch.id, batch.status
                    )
                    # an earlier try's create: its late-copy window, if open, counts from its creation
                    found = Ambiguity.after_created(batch.created_at, client.timeout)
                    late = LateCopies.of(found, derived=True)
                    return ShardRun(shard, base, generation, batch.input_file_id, batch, late)
                self.log.info("Shard %s: batch %s ended badly; replacing it", shard.index, batch.id)
                replacement.add(shard.index, spooled, history, shard.requests, generation + 1)
                if shard.index in replacement.remainders:  # answers are kept: the round sends only the rest
                    return ShardRun(shard, base, generation + 1)
                if batch.input_file_id and self._file_exists(client, batch.input_file_id):
                    return ShardRun(shard, base, generation + 1, batch.input_file_id)
                generation += 1
            else:
                generation = 1
            return self.stage_file(client, shard, base, generation, spooled, stored, staged, token=base)
        finally:
            spooled.unlink(missing_ok=True)

    def stage_file(
        self,
        client: DashScopeClient,
        shard: Shard,
        base: str,
        generation: int,
        path: Path,
        stored: dict[str, FileObject],
        staged: list[str],
        token: str | None = None,
    ) -> ShardRun:
        """
        A shard's run on the file at ``path``: one an earlier try uploaded under ``token``, else uploaded
        now; ``path`` is deleted after.

        :param token: The upload token (default: a follow-up round's, ``base`` with ``generation``).
        """
        token = token or with_generation(base, generation)
        try:
            found = stored.pop(tokenized_filename(path.name, token), None)
            if found is not None:
                self.log.info("Shard %s: re-using file %s of an earlier try", shard.index, found.id)
                staged.append(found.id)
                return ShardRun(shard, base, generation, found.id)
            file_id, late = self._upload(client, path, token, staged)
            return ShardRun(shard, base, generation, file_id, late=late)
        finally:
            path.unlink(missing_ok=True)

    def _upload(
        self, client: DashScopeClient, path: Path, token: str, staged: list[str]
    ) -> tuple[str, LateCopies | None]:
        """Upload a shard (or stage it to OSS): its file id and the late copy of an ambiguous upload."""
        self.stop_if_killed()
        if self.oss is not None:  # nothing to delete later: OSS objects are the user's
            return self.oss.stage(path, token, self.log), None
        receipt = client.upload_file_receipt(path, filename=path.name, upload_token=token)
        file_id = receipt.value.id
        staged.append(file_id)
        self.log.info("Uploaded %s as file %s", path.name, file_id)
        return file_id, LateCopies.of(uploaded=receipt.ambiguity, file_name=receipt.value.filename)

    @staticmethod
    def _file_exists(client: DashScopeClient, file_id: str) -> bool:
        """Whether an uploaded file still exists (an OSS object is staged again, or found re-usable)."""
        if parse_oss_input(file_id) is not None:
            return False
        try:
            client.retrieve_file(file_id)
        except NotFoundError:
            return False
        return True

    def delete_files(self, client: DashScopeClient, context: Context, file_ids: Sequence[str]) -> None:
        """
        Delete files (each call retried with the client's backoff); report those that stay.

        A file that could not be deleted is named in a warning and under the ``cleanup_pending`` XCom
        key; its name carries this job's token, so the next try finds it and deletes it again.
        """
        pending = []
        for file_id in file_ids:
            if parse_oss_input(file_id) is not None:  # staged OSS objects are kept
                continue
            try:
                client.delete_file(file_id)
            except NotFoundError:
                pass
            except DashScopeError as exc:
                self.log.warning("Could not delete file %s (the next try deletes it): %s", file_id, exc)
                pending.append(file_id)
        if pending:
            context["ti"].xcom_push(key=CLEANUP_XCOM_KEY, value=pending)

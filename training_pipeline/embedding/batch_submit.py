"""Submitting texts as batches, and taking over jobs a stopped run left half-submitted.

Every step towards a batch is recorded before the next call to the API (see
`storage.batch_state`): the job and its texts, then the uploaded file's id, then the batch id.
So whatever moment a run dies at, the next one knows how far it got:

- `preparing` (the file may or may not have been uploaded): no batch can exist, since a batch is
  only created from a recorded file id. If the API has a file of the recorded name, it is reused
  (or, by a run that will not submit, deleted); if not, the job is dropped (`abandoned`) and its
  texts are free to go into a new job.
- `uploaded`: the run may have died after creating the batch and before recording its id, so the
  batches are listed first; a batch of that file is adopted, and only if there is none is one
  created. A batch is therefore never created twice for the same texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import estimate_tokens
from training_pipeline.embedding.batch_client import BatchApiError, BatchClient
from training_pipeline.embedding.batch_requests import plan_input_files
from training_pipeline.storage.batch_state import BatchJob, BatchJobs

FIND_BATCH_SLACK_SECONDS = 3_600
"""Batches are searched back to this long before their job was recorded (clock skew)."""


@dataclass
class Submitter:
    """Creates batches for one model and brings recorded jobs up to `submitted`."""

    model_name: str
    config: EmbeddingModelConfig
    client: BatchClient
    jobs: BatchJobs
    aid_ranges: Sequence[str]
    run_id: str | None
    log: Callable[[str], None]
    warn: Callable[[str], None]

    def submit(
        self, checksums: Sequence[str], texts: Sequence[str], attempt: int
    ) -> list[BatchJob]:
        """One job per input file (within the file limits), each recorded, uploaded and created."""
        submitted = []
        by_checksum = dict(zip(checksums, texts, strict=True))
        for planned in plan_input_files(self.model_name, self.config, checksums, texts):
            estimates = [estimate_tokens(by_checksum[checksum]) for checksum in planned.checksums]
            job = self.jobs.record(
                planned.checksums,
                estimates,
                aid_ranges=self.aid_ranges,
                attempt=attempt,
                run_id=self.run_id,
            )
            file_id = self.client.upload(job.input_file_name, planned.content)
            job = self.jobs.mark_uploaded(job, file_id)
            submitted.append(self._create(job))
            self.log(
                f"{self.model_name}: submitted batch {submitted[-1].batch_id} (job "
                f"{job.job_id}, attempt {attempt}): {len(planned.checksums)} texts, "
                f"{len(planned.content):,} bytes"
            )
        return submitted

    def _create(self, job: BatchJob) -> BatchJob:
        assert job.input_file_id is not None
        batch = self.client.create(
            job.input_file_id,
            {"training_pipeline_model": self.model_name, "training_pipeline_job": str(job.job_id)},
            created_after=job.created_at.timestamp() - FIND_BATCH_SLACK_SECONDS,
        )
        return self.jobs.mark_submitted(job, batch.id, batch.status)

    def resume(self, job: BatchJob, *, may_submit: bool) -> BatchJob:
        """A recorded job brought to `submitted`, or closed as `abandoned` when it never became a
        batch (always, when the run may not submit: a sync-mode run)."""
        batch = None
        if job.state == "preparing":
            file_id = self._find_file(job)
            if file_id is None:
                self.log(
                    f"{self.model_name}: job {job.job_id} was recorded but its file never "
                    "reached the API; dropped, its texts are embedded anew"
                )
                return self.jobs.close(job, "abandoned")
            self.log(f"{self.model_name}: job {job.job_id}: its uploaded file {file_id} is reused")
            job = self.jobs.mark_uploaded(job, file_id)
        elif job.state == "uploaded":
            batch = self._find_batch(job)
        if job.state == "uploaded":
            assert job.input_file_id is not None
            if batch is not None:
                self.log(
                    f"{self.model_name}: job {job.job_id}: found batch {batch.id} created from "
                    f"its file by a run that stopped before recording it; adopted"
                )
                return self.jobs.mark_submitted(job, batch.id, batch.status)
            if not may_submit:
                self.client.delete_file(job.input_file_id)
                self.log(
                    f"{self.model_name}: job {job.job_id} never became a batch; its uploaded "
                    f"file {job.input_file_id} was deleted and its texts are embedded now"
                )
                return self.jobs.close(job, "abandoned")
            return self._create(job)
        return job

    def _find_file(self, job: BatchJob) -> str | None:
        try:
            return self.client.find_file(job.input_file_name)
        except BatchApiError as error:
            if not error.not_supported:
                raise
            # No batch can exist for this job either way; at worst an unused file stays behind.
            self.warn(
                f"{self.model_name}: job {job.job_id}: the API cannot list files (HTTP "
                f"{error.status}), so an upload of {job.input_file_name} that the stopped run "
                "may have made cannot be reused; its texts are submitted in a new file"
            )
            return None

    def _find_batch(self, job: BatchJob):
        assert job.input_file_id is not None
        created_after = job.created_at.timestamp() - FIND_BATCH_SLACK_SECONDS
        try:
            return self.client.find_batch(job.input_file_id, created_after)
        except BatchApiError as error:
            if not error.not_supported:
                raise
            raise BatchApiError(
                f"embedding model {self.model_name!r}: job {job.job_id} uploaded file "
                f"{job.input_file_id}, but the run stopped before it recorded whether a batch "
                f"was created from it, and the API cannot list batches (HTTP {error.status}) to "
                "tell. Creating one now could pay for its texts twice, so nothing was "
                "submitted: look for a batch of that input file in the provider's console; "
                "if there is none, delete the file there and set the job's state to "
                "'abandoned' in embedding_batches, then re-run",
                status=error.status,
            ) from None

"""Dataset snapshots on disk: `<id>.parquet` for the trainer plus `<id>.metadata.json`.

The file format is the one the existing trainer reads (`parquet_v1`, zstd). Ids are validated
(no path tricks) and unique: a snapshot is published by hard-linking a finished temporary file
to its final name, which fails if the id is taken, so two builds can never overwrite each other
and a crashed build never leaves a half-written file under a real id. The sidecar is written
last; a snapshot without a sidecar is incomplete and is not listed.

Deleting or exporting a snapshot touches its two files only: never the database, never the
embedding cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from training_pipeline.core.models_config import model_slug
from training_pipeline.core.splits import SPLIT_NAMES
from training_pipeline.storage.snapshot_table import (
    COMPRESSION,
    FILE_FORMAT,
    file_sha256,
    write_parquet,
)
from training_pipeline.storage.split_export import split_sidecar, write_split

_DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class DatasetIdError(ValueError):
    """A dataset id that is malformed or already taken."""


class DatasetNotFoundError(LookupError):
    """No snapshot with that id in the folder."""


class DatasetExportError(RuntimeError):
    """An export that would overwrite files, or whose destination is unusable."""


def write_sidecar(path: Path, sidecar: Mapping[str, Any]) -> None:
    """Write a sidecar atomically (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(
            json.dumps(sidecar, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
        )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def validate_dataset_id(dataset_id: str) -> str:
    """Return the id if it is safe as a file name: letters, digits, '_', '-', '.', no '..'."""
    if (
        not isinstance(dataset_id, str)
        or not _DATASET_ID.fullmatch(dataset_id)
        or ".." in dataset_id
    ):
        raise DatasetIdError(
            f"invalid dataset id {dataset_id!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..'"
        )
    return dataset_id


def new_dataset_id(model_name: str, now: datetime | None = None) -> str:
    """A fresh id: model, UTC time and a random suffix (computed per build, never at import)."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{model_slug(model_name)}-{moment}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class PreparedFile:
    """A finished Parquet file that has no dataset id yet."""

    path: Path
    sha256: str
    size: int
    columns: list[str]
    rows: int


@dataclass(frozen=True)
class SnapshotFiles:
    """Where one snapshot's files live."""

    parquet: Path
    sidecar: Path

    def __iter__(self) -> Iterator[Path]:
        return iter((self.parquet, self.sidecar))


class DatasetStore:
    """The folder of dataset snapshots."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)

    def files(self, dataset_id: str) -> SnapshotFiles:
        validate_dataset_id(dataset_id)
        return SnapshotFiles(
            parquet=self.base_dir / f"{dataset_id}.parquet",
            sidecar=self.base_dir / f"{dataset_id}.metadata.json",
        )

    def exists(self, dataset_id: str) -> bool:
        files = self.files(dataset_id)
        return files.parquet.exists() or files.sidecar.exists()

    @contextmanager
    def temporary_file(self) -> Iterator[Path]:
        """A temporary path in the folder for a file to `publish` (written by the caller, e.g.
        row group by row group); it is removed on exit unless `publish` gave it a dataset id
        (hard links keep the published name)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.base_dir / f".snapshot.{uuid.uuid4().hex}.tmp"
        try:
            yield temporary
        finally:
            temporary.unlink(missing_ok=True)

    @contextmanager
    def prepare(self, table: pa.Table) -> Iterator[PreparedFile]:
        """Write `table` (in one piece) as a Parquet file under a temporary name in the folder;
        see `temporary_file`."""
        with self.temporary_file() as temporary:
            write_parquet(table, temporary)
            yield PreparedFile(
                path=temporary,
                sha256=file_sha256(temporary),
                size=temporary.stat().st_size,
                columns=list(table.column_names),
                rows=table.num_rows,
            )

    def publish(
        self, prepared: PreparedFile, dataset_id: str, sidecar: dict[str, Any]
    ) -> dict[str, Any]:
        """Give a prepared file its dataset id (failing if the id is taken), then write the
        sidecar; returns the sidecar as written."""
        files = self.files(dataset_id)
        try:
            os.link(prepared.path, files.parquet)
        except FileExistsError:
            raise DatasetIdError(f"dataset id {dataset_id!r} is already taken") from None
        written = {
            **sidecar,
            "dataset_id": dataset_id,
            "file_format": FILE_FORMAT,
            "compression": COMPRESSION,
            "file_size_bytes": prepared.size,
            "file_sha256": prepared.sha256,
            "columns": prepared.columns,
            "total_records": prepared.rows,
        }
        write_sidecar(files.sidecar, written)
        return written

    def write(self, dataset_id: str, table: pa.Table, sidecar: dict[str, Any]) -> dict[str, Any]:
        """Publish a snapshot under a new id; returns the sidecar as written."""
        self.files(dataset_id)  # validate the id before writing anything
        with self.prepare(table) as prepared:
            return self.publish(prepared, dataset_id, sidecar)

    def find_identical(self, sha256: str) -> dict[str, Any] | None:
        """The sidecar of the newest complete snapshot whose Parquet file has this SHA-256."""
        matches = [sidecar for sidecar in self.list() if sidecar.get("file_sha256") == sha256]
        return matches[-1] if matches else None

    def read_metadata(self, dataset_id: str) -> dict[str, Any]:
        files = self.files(dataset_id)
        if not files.sidecar.exists():
            raise DatasetNotFoundError(f"no dataset snapshot {dataset_id!r} in {self.base_dir}")
        return json.loads(files.sidecar.read_text(encoding="utf-8"))

    def list(self) -> Iterator[dict[str, Any]]:
        """Sidecars of every complete snapshot, oldest first (by `created_at`, then id)."""
        if not self.base_dir.exists():
            return iter(())
        sidecars = []
        for path in self.base_dir.glob("*.metadata.json"):
            try:
                sidecar = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue  # removed meanwhile, or not a sidecar of ours
            if isinstance(sidecar, dict) and "dataset_id" in sidecar:
                sidecars.append(sidecar)
        return iter(
            sorted(sidecars, key=lambda s: (str(s.get("created_at", "")), str(s["dataset_id"])))
        )

    def export(
        self,
        dataset_id: str,
        destination: Path,
        *,
        force: bool = False,
        split: str | None = None,
    ) -> SnapshotFiles:
        """Copy a snapshot's Parquet file and sidecar out of the store, or only one split's rows.

        A `destination` ending in `.parquet` names the Parquet copy, and the sidecar goes next to
        it as `<stem>.metadata.json`; any other `destination` is a folder (created if missing)
        where both files keep their names (`<id>.<split>.*` for a split). Existing files are only
        replaced with `force`. With `split`, the copy holds that split's rows only (same columns)
        and its sidecar describes them: see `split_sidecar`.
        """
        if split is not None and split not in SPLIT_NAMES:
            raise DatasetExportError(
                f"unknown split {split!r}: choose one of {', '.join(SPLIT_NAMES)}"
            )
        source = self.files(dataset_id)
        parent = self.read_metadata(dataset_id)  # a snapshot without a sidecar is incomplete
        name = dataset_id if split is None else f"{dataset_id}.{split}"
        target = self._export_target(Path(destination), name)
        existing = [str(path) for path in target if path.exists()]
        if existing and not force:
            raise DatasetExportError(
                f"not overwriting {', '.join(existing)} (use --force to replace)"
            )
        target.parquet.parent.mkdir(parents=True, exist_ok=True)
        if split is None:
            for origin, copy in (
                (source.parquet, target.parquet),
                (source.sidecar, target.sidecar),
            ):
                temporary = copy.with_name(f".{copy.name}.{uuid.uuid4().hex}.tmp")
                try:
                    shutil.copyfile(origin, temporary)
                    os.replace(temporary, copy)
                finally:
                    temporary.unlink(missing_ok=True)
            return target
        temporary = target.parquet.with_name(f".{target.parquet.name}.{uuid.uuid4().hex}.tmp")
        try:
            subset = write_split(source.parquet, temporary, split)
            sidecar = split_sidecar(parent, split, subset, temporary)
            os.replace(temporary, target.parquet)
        finally:
            temporary.unlink(missing_ok=True)
        write_sidecar(target.sidecar, sidecar)
        return target

    def _export_target(self, destination: Path, name: str) -> SnapshotFiles:
        if destination.suffix == ".parquet" and not destination.is_dir():
            target = SnapshotFiles(
                parquet=destination,
                sidecar=destination.with_name(f"{destination.stem}.metadata.json"),
            )
        else:
            if destination.exists() and not destination.is_dir():
                raise DatasetExportError(
                    f"cannot export to {destination}: it is a file (name a folder, or a path "
                    "ending in .parquet)"
                )
            target = SnapshotFiles(
                parquet=destination / f"{name}.parquet",
                sidecar=destination / f"{name}.metadata.json",
            )
        if target.parquet.parent.resolve() == self.base_dir.resolve():
            raise DatasetExportError(
                f"export to a place outside the datasets folder {self.base_dir} (a copy there "
                "would be listed as a second snapshot with the same id)"
            )
        return target

    def delete(self, dataset_id: str) -> SnapshotFiles:
        """Remove a snapshot's files (never anything else, and never the embedding cache)."""
        files = self.files(dataset_id)
        if not files.parquet.exists() and not files.sidecar.exists():
            raise DatasetNotFoundError(f"no dataset snapshot {dataset_id!r} in {self.base_dir}")
        files.sidecar.unlink(missing_ok=True)
        files.parquet.unlink(missing_ok=True)
        return files


def previous_snapshot_time(store: DatasetStore, model_name: str) -> str | None:
    """`created_at` of this model's latest snapshot, the line between new and reused vectors."""
    times = [
        sidecar["created_at"]
        for sidecar in store.list()
        if sidecar.get("stats", {}).get("embedding_model") == model_name
    ]
    return max(times) if times else None

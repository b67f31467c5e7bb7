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

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from training_pipeline.models_config import model_slug

FILE_FORMAT = "parquet_v1"
COMPRESSION = "zstd"
_DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class DatasetIdError(ValueError):
    """A dataset id that is malformed or already taken."""


class DatasetNotFoundError(LookupError):
    """No snapshot with that id in the folder."""


class DatasetExportError(RuntimeError):
    """An export that would overwrite files, or whose destination is unusable."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (two snapshots of the same rows have the same digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_dataset_id(dataset_id: str) -> str:
    """Return the id if it is safe as a file name: letters, digits, '_', '-', '.', no '..'."""
    if not isinstance(dataset_id, str) or not _DATASET_ID.match(dataset_id) or ".." in dataset_id:
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

    def write(self, dataset_id: str, table: pa.Table, sidecar: dict[str, Any]) -> dict[str, Any]:
        """Publish a snapshot under a new id; returns the sidecar as written."""
        files = self.files(dataset_id)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.base_dir / f".{dataset_id}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, temporary, compression=COMPRESSION)
            try:
                os.link(temporary, files.parquet)
            except FileExistsError:
                raise DatasetIdError(f"dataset id {dataset_id!r} is already taken") from None
        finally:
            temporary.unlink(missing_ok=True)
        written = {
            **sidecar,
            "dataset_id": dataset_id,
            "file_format": FILE_FORMAT,
            "compression": COMPRESSION,
            "file_size_bytes": files.parquet.stat().st_size,
            "file_sha256": file_sha256(files.parquet),
            "columns": table.column_names,
            "total_records": table.num_rows,
        }
        sidecar_temporary = files.sidecar.with_suffix(f".{uuid.uuid4().hex}.tmp")
        sidecar_temporary.write_text(
            json.dumps(written, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
        )
        os.replace(sidecar_temporary, files.sidecar)
        return written

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

    def export(self, dataset_id: str, destination: Path, *, force: bool = False) -> SnapshotFiles:
        """Copy a snapshot's Parquet file and sidecar out of the store.

        A `destination` ending in `.parquet` names the Parquet copy, and the sidecar goes next to
        it as `<stem>.metadata.json`; any other `destination` is a folder (created if missing)
        where both files keep their names. Existing files are only replaced with `force`.
        """
        source = self.files(dataset_id)
        self.read_metadata(dataset_id)  # a snapshot without a sidecar is incomplete
        destination = Path(destination)
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
                parquet=destination / source.parquet.name,
                sidecar=destination / source.sidecar.name,
            )
        if target.parquet.parent.resolve() == self.base_dir.resolve():
            raise DatasetExportError(
                f"export to a place outside the datasets folder {self.base_dir} (a copy there "
                "would be listed as a second snapshot with the same id)"
            )
        existing = [str(path) for path in target if path.exists()]
        if existing and not force:
            raise DatasetExportError(
                f"not overwriting {', '.join(existing)} (use --force to replace)"
            )
        target.parquet.parent.mkdir(parents=True, exist_ok=True)
        for origin, copy in ((source.parquet, target.parquet), (source.sidecar, target.sidecar)):
            temporary = copy.with_name(f".{copy.name}.{uuid.uuid4().hex}.tmp")
            try:
                shutil.copyfile(origin, temporary)
                os.replace(temporary, copy)
            finally:
                temporary.unlink(missing_ok=True)
        return target

    def delete(self, dataset_id: str) -> SnapshotFiles:
        """Remove a snapshot's files (never anything else, and never the embedding cache)."""
        files = self.files(dataset_id)
        if not files.parquet.exists() and not files.sidecar.exists():
            raise DatasetNotFoundError(f"no dataset snapshot {dataset_id!r} in {self.base_dir}")
        files.sidecar.unlink(missing_ok=True)
        files.parquet.unlink(missing_ok=True)
        return files

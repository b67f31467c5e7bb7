"""Evaluation benchmark: what `evaluation__<model>` costs next to reading its own input.

100,000 labelled rows of 1024-d unit vectors (`BENCH_EVALUATION_ROWS` for a quicker run), whose
labels depend on the vectors plus noise, in a labelled-dataset table of one fresh embedded
PostgreSQL. In one run, side by side, the asset's three parts:

- reading the rows it evaluates (`read_table`: aid, label, inconsistent, checksum, vector), the
  reference, since that read is what the pipeline already pays to use the dataset at all;
- the probe and the baseline, both variants (`core.evaluation.evaluate`), with its peak memory
  beyond the input matrix (tracemalloc: numpy and scikit-learn allocations) against the size of
  the raw vectors;
- storing the test predictions (`replace_evaluation`).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from psycopg import sql

from benchmarks.bench_storage import embedded_server
from benchmarks.report import Report
from training_pipeline.core.evaluation import evaluate
from training_pipeline.core.splits import SplitRatios, assign_splits
from training_pipeline.defs.assets.evaluation import EVALUATED_COLUMNS
from training_pipeline.defs.assets.labelled_dataset import LABELLED_DATASET_COLUMNS
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.evaluations import (
    StoredEvaluation,
    VariantPredictions,
    ensure_tables,
    replace_evaluation,
)
from training_pipeline.storage.table_io import read_table, write_frame
from training_pipeline.storage.vector_columns import vector_matrix, vector_series

ROWS = int(os.environ.get("BENCH_EVALUATION_ROWS", "100000"))
DIMENSIONS = 1024
SCHEMA = "training_pipeline"
TABLE = "labelled_dataset__bench"
REPEATS = 3


def labelled_rows(rows: int, seed: int = 11) -> pd.DataFrame:
    """Labelled-dataset rows whose labels a linear probe can learn, with noise."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, DIMENSIONS), dtype=np.float32)
    direction = rng.standard_normal(DIMENSIONS).astype(np.float32)
    labels = vectors @ direction + 20 * rng.standard_normal(rows).astype(np.float32) > 0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "aid": np.arange(1, rows + 1, dtype=np.int64),
            "aid_range": f"0-{rows}",
            "label": labels,
            "inconsistent": rng.random(rows) < 0.1,
            "positive_votes": labels.astype(np.int32),
            "negative_votes": (~labels).astype(np.int32),
            "text_checksum": [f"{index:032x}" for index in range(rows)],
            "embedding": vector_series(vectors),
            "metadata_json": '{"title": "", "description": "", "tags": ""}',
            "user_labels_json": "[]",
        }
    )


def run() -> Report:
    report = Report("evaluation", f"Evaluation of {ROWS:,} labelled rows of {DIMENSIONS}-d vectors")
    frame = labelled_rows(ROWS)
    raw_bytes = ROWS * DIMENSIONS * 4
    table = sql.Identifier(SCHEMA, TABLE)
    with embedded_server() as url:
        with open_connection(url) as connection:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
            columns = ", ".join(
                f"{col.name} {col.type} NOT NULL" for col in LABELLED_DATASET_COLUMNS
            )
            connection.execute(f"CREATE TABLE {SCHEMA}.{TABLE} ({columns})")
            write_frame(connection, table, frame, LABELLED_DATASET_COLUMNS)
            connection.commit()
            ensure_tables(connection, SCHEMA)
            connection.commit()
        del frame
        reads, evaluations, stores, peaks = [], [], [], []
        for _ in range(REPEATS):
            with open_connection(url) as connection:
                started = time.perf_counter()
                rows = read_table(connection, table, EVALUATED_COLUMNS)
                reads.append(time.perf_counter() - started)
            matrix = vector_matrix(rows["embedding"])
            aids = rows["aid"].to_numpy()
            splits = assign_splits(aids.tolist(), SplitRatios())
            tracemalloc.start()
            started = time.perf_counter()
            results = evaluate(matrix, aids, rows["label"], rows["inconsistent"], splits)
            evaluations.append(time.perf_counter() - started)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            stored = StoredEvaluation(
                "bench", "bench-run", datetime.now(UTC), "-", SplitRatios().as_dict(), {}, {}
            )
            predictions = [
                VariantPredictions("bench", v, r.test_aids, r.test_labels, r.test_scores)
                for v, r in results.items()
            ]
            with open_connection(url) as connection:
                started = time.perf_counter()
                replace_evaluation(connection, SCHEMA, stored, predictions)
                connection.commit()
                stores.append(time.perf_counter() - started)
            del rows, matrix
    read, evaluation, store = (float(np.median(values)) for values in (reads, evaluations, stores))
    report.add("read the rows (reference)", read, "s", note="read_table, median of 3")
    report.add(
        "probe + baseline, both variants",
        evaluation,
        "s",
        baseline=read,
        note=f"lbfgs iterations: {results['all'].iterations}; vs the read",
    )
    report.add("store the test predictions", store, "s", baseline=read, note="vs the read")
    report.add(
        "peak memory of the evaluation beyond its input",
        max(peaks) / 2**20,
        "MiB",
        baseline=raw_bytes / 2**20,
        note="tracemalloc; vs the raw float32 vectors",
    )
    probe = results["all"].probe.values
    report.notes.append(
        "test ROC AUC of the probe "
        f"{probe['roc_auc']:.3f} (baseline 0.5), accuracy {probe['accuracy']:.3f} (baseline "
        f"{results['all'].baseline.values['accuracy']:.3f}): the probe learns the planted signal"
    )
    return report

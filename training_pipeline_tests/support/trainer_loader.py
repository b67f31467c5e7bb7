"""The video-archive project's trainer as it reads our files: its loader, step by step, and a
PyTorch training loop on top, so that a test fails exactly where the real trainer would.

What the loader does (read at its source): `pd.read_parquet`; embeddings stacked from the
`embedding` column, where anything that is not a list or array silently becomes a zero vector
of 2048 (we count those: a silent zero vector is a broken file too); `label` cast to int64; per
row, `json.loads(metadata_json)` merged with `aid`, `inconsistent` and `text_checksum` into one
dict per sample; samples batched by `torch.utils.data.default_collate`, which raises on `None`.
It splits the file it is given at random (80/10/10, its own seed) and ignores any split column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, random_split

FALLBACK_DIMENSIONS = 2048


@dataclass
class LoadedDataset:
    embeddings: np.ndarray
    labels: np.ndarray
    metadata: list[dict]
    zero_vector_fallbacks: int


def load(path: Path) -> LoadedDataset:
    """The trainer's loader."""
    frame = pd.read_parquet(path)
    vectors = []
    fallbacks = 0
    for value in frame["embedding"]:
        if isinstance(value, list | np.ndarray):
            vectors.append(np.asarray(value, dtype=np.float32))
        else:
            vectors.append(np.zeros(FALLBACK_DIMENSIONS, dtype=np.float32))
            fallbacks += 1
    metadata = []
    for row in frame.itertuples(index=False):
        sample = json.loads(row.metadata_json)
        sample.update(
            {"aid": row.aid, "inconsistent": row.inconsistent, "text_checksum": row.text_checksum}
        )
        metadata.append(sample)
    return LoadedDataset(
        embeddings=np.stack(vectors),
        labels=frame["label"].astype("int64").to_numpy(),
        metadata=metadata,
        zero_vector_fallbacks=fallbacks,
    )


class Samples(Dataset):
    """(embedding, label, metadata) per row, as the trainer's Dataset yields them."""

    def __init__(self, loaded: LoadedDataset) -> None:
        self.loaded = loaded

    def __len__(self) -> int:
        return len(self.loaded.labels)

    def __getitem__(self, index: int):
        return (
            torch.from_numpy(self.loaded.embeddings[index]),
            torch.tensor(self.loaded.labels[index]),
            self.loaded.metadata[index],
        )


def batches(loaded: LoadedDataset, batch_size: int = 4) -> list:
    """Every sample through `default_collate`, in batches (raises where the trainer would)."""
    return list(DataLoader(Samples(loaded), batch_size=batch_size, shuffle=False))


def train(loaded: LoadedDataset, epochs: int = 20, seed: int = 0) -> float:
    """The trainer's loop: a random 80/10/10 split of the file, a linear classifier trained with
    BCE on the first part; returns the accuracy on its own test part (or on train if tiny)."""
    generator = torch.Generator().manual_seed(seed)
    samples = Samples(loaded)
    n = len(samples)
    n_train, n_validation = int(n * 0.8), int(n * 0.1)
    train_part, _validation, test_part = random_split(
        samples, [n_train, n_validation, n - n_train - n_validation], generator=generator
    )
    torch.manual_seed(seed)
    model = torch.nn.Linear(loaded.embeddings.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for embedding, label, _metadata in DataLoader(train_part, batch_size=8, shuffle=True):
            optimizer.zero_grad()
            loss = loss_fn(model(embedding).squeeze(1), label.float())
            loss.backward()
            optimizer.step()
    scored = test_part if len(test_part) else train_part
    with torch.no_grad():
        correct = total = 0
        for embedding, label, _metadata in DataLoader(scored, batch_size=64):
            predicted = (model(embedding).squeeze(1) > 0).long()
            correct += int((predicted == label).sum())
            total += len(label)
    return correct / total

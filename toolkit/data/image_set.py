"""``ImageSet`` (images with optional labels) and ``DataSplits`` (train, validation and test): what ``toolkit.data.sources`` lists."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """A list of images with optional labels.

    Attributes:
        paths: one entry per image; a file path, or a name for in-memory images.
        labels: int64 array (N,) indexing ``class_names``, or None when unlabeled.
        class_names: the names of all classes of the data set (shared by train and test).
        arrays: in-memory images (N, H, W) uint8 when the set has no files (``digits``).
        rotations: quarter turns (N,) applied after decoding (rotation classes), or None.
    """

    paths: list[str]
    labels: np.ndarray | None
    class_names: list[str]
    arrays: np.ndarray | None = None
    rotations: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at ``index`` (an int array), keeping the class list."""
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            paths=[self.paths[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            class_names=self.class_names,
            arrays=None if self.arrays is None else self.arrays[index],
            rotations=None if self.rotations is None else self.rotations[index],
        )


@dataclass
class DataSplits:
    """The train split (pretraining, kNN memory bank), the test split (reported evaluation) and the
    validation split (monitoring, early stopping, threshold calibration), disjoint files."""

    train: ImageSet
    test: ImageSet | None
    source: str
    notes: list[str] = field(default_factory=list)
    val: ImageSet | None = None

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

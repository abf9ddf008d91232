"""Top-k over class scores: one ranking for every k, so that top-k accuracy never falls as k grows.

The ranking: classes by score, highest first; equal scores by class index, lowest first. It is the order
``np.argsort(-scores, kind="stable")`` gives, and its first class is ``np.argmax``'s. An image counts as correct
at k when its label's rank under this order is below k, so a tie across the k-th place counts only for the
classes that rank before it: scores (0.4, 0.4, 0.2) with label 1 are wrong at k=1 (class 0 ranks first) and
right at k=2. A row of equal scores (a dead ReLU, a saturated quantized output) ranks class 0 first.

Rows with NaN or Inf have no meaningful ranking; callers refuse them (:mod:`cnnkit.finite`, :class:`ScoreTally`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.finite import NonFinite, merge, nonfinite

TOP5 = 5  # the k of the top-5 accuracy eval reports (when the model has more than 5 classes)


def _rows(scores: Any) -> np.ndarray:
    a = np.asarray(scores)
    return a.reshape(len(a), -1)


def top1(scores: Any) -> np.ndarray:
    """Each row's first class under the ranking: the highest score, the lowest class index among equals."""
    return np.argmax(_rows(scores), axis=1)


def ranking(scores: Any) -> np.ndarray:
    """Each row's classes in ranking order (best first)."""
    return np.argsort(-_rows(scores), axis=1, kind="stable")


def label_ranks(scores: Any, labels: Any) -> np.ndarray:
    """Each label's rank under the ranking (0: the top-1 class): the classes scored higher, plus the classes
    scored equal with a lower index. A label outside ``0..classes-1`` (-1: unlabelled) gets ``classes``, a rank
    no k reaches."""
    s = _rows(scores)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    n, classes = s.shape
    valid = (y >= 0) & (y < classes)
    safe = np.where(valid, y, 0)
    own = s[np.arange(n), safe][:, None]
    before = np.arange(classes)[None, :] < safe[:, None]
    ranks = np.sum(s > own, axis=1) + np.sum((s == own) & before, axis=1)
    return np.where(valid, ranks, classes)


def top1_and_top5(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top-1 class, and whether its label ranks among the first 5 (all False with 5 classes or fewer,
    where top-5 says nothing). Both from the one ranking: a top-1 hit is always a top-5 hit."""
    s = _rows(scores)
    if s.shape[1] <= TOP5:
        return top1(s), np.zeros(len(s), bool)
    return top1(s), label_ranks(s, labels) < TOP5


def tied_at_top(scores: Any) -> np.ndarray:
    """Per row: whether more than one class shares the highest score (top-1 then falls to the lowest index)."""
    s = _rows(scores)
    if s.shape[1] < 2:
        return np.zeros(len(s), bool)
    return np.sum(s == s.max(axis=1, keepdims=True), axis=1) > 1


@dataclass
class ScoreTally:
    """One model's running top-1 predictions, top-5 hits and NaN/Inf count over consecutive batches of scores.

    NaN/Inf are counted, not judged: the caller refuses the model when :attr:`bad` is set.
    """

    preds: list[np.ndarray] = field(default_factory=list)
    top5_hits: int = 0
    n_outputs: int = 0
    bad: NonFinite | None = None
    seen: int = 0  # rows added so far (the next batch's offset)
    tied: int = 0  # rows whose highest score more than one class shares

    def add(self, output: Any, labels: Any | None = None) -> np.ndarray:
        """Tally one batch of model output (one row per image; flattened); ``labels`` for top-5 hits. Returns
        the batch's top-1 classes."""
        scores = _rows(output)
        self.n_outputs = scores.shape[1]
        self.bad = merge(self.bad, nonfinite(scores, offset=self.seen))
        self.seen += len(scores)
        self.tied += int(np.sum(tied_at_top(scores)))
        if labels is None:
            preds = top1(scores)
        else:
            preds, top5 = top1_and_top5(scores, labels)
            self.top5_hits += int(np.sum(top5))
        self.preds.append(preds)
        return preds

    def predictions(self) -> np.ndarray:
        """Every top-1 class so far, in order."""
        return np.concatenate(self.preds) if self.preds else np.empty(0, np.int64)

"""Top-k from one ranking (cnnkit.topk): ties break by class index for every k, so top-k never falls as k grows."""

from __future__ import annotations

import numpy as np
from cnnkit.topk import ScoreTally, label_ranks, ranking, tied_at_top, top1, top1_and_top5


def test_ties_rank_by_class_index_the_same_for_every_k() -> None:
    scores = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.3], [0.0, 0.0, 0.0]], np.float32)
    assert top1(scores).tolist() == [0, 1, 0]
    assert ranking(scores).tolist() == [[0, 1, 2], [1, 2, 0], [0, 1, 2]]
    # Label 1 in row 0 ties with class 0, which ranks first: wrong at k=1, right at k=2.
    assert label_ranks(scores, [1, 2, 2]).tolist() == [1, 1, 2]
    # The rank agrees with the full ranking wherever the label sits.
    rng = np.random.default_rng(0)
    many = rng.integers(0, 3, (500, 12)).astype(np.float32)  # heavy ties
    labels = rng.integers(0, 12, 500)
    order = ranking(many)
    assert label_ranks(many, labels).tolist() == [int(np.flatnonzero(o == y)[0]) for o, y in zip(order, labels)]
    assert (order[:, 0] == top1(many)).all()


def test_top5_is_never_below_top1_on_tied_scores() -> None:
    scores = np.zeros((40, 1000), np.float32)  # a dead ReLU: every class scores 0
    scores[20:, 900:] = 1.0  # a saturated block: a hundred classes tie for the top
    labels = np.concatenate([np.arange(20) % 7, 900 + np.arange(20) % 9])
    preds, top5 = top1_and_top5(scores, labels)
    assert preds.tolist() == [0] * 20 + [900] * 20
    assert (top5 >= (preds == labels)).all()
    assert top5.tolist() == [int(y) < 5 for y in labels[:20]] + [int(y) < 905 for y in labels[20:]]
    assert tied_at_top(scores).all()


def test_labels_outside_the_classes_are_never_hits() -> None:
    scores = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert label_ranks(scores, [-1, 10]).tolist() == [10, 10]
    assert not top1_and_top5(scores, np.array([-1, 10]))[1].any()


def test_tally_counts_hits_ties_and_nonfinite_over_batches() -> None:
    tally = ScoreTally()
    tally.add(np.array([[1.0, 1.0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0]], np.float32), np.array([1, 1]))
    tally.add(np.array([[np.nan, 0, 0, 0, 0, 0]], np.float32), np.array([0]))
    assert tally.predictions().tolist() == [0, 1, 0]
    assert tally.top5_hits >= 2 and tally.n_outputs == 6 and tally.tied == 1
    assert tally.bad is not None and tally.bad.first == 2 and tally.bad.samples == 1

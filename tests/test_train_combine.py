"""The combiners of a run's parts: the class-wise stack learns which part to follow for which class; the single weight
is framecache 0.3's mix."""

import numpy as np

from framecache.train.combine import combine, cross_entropy, fit_combiner


def _two_experts(videos_per_class: int, seed: int):
    """Four classes; part A is right on classes 0 and 1 and, on 2 and 3, confidently takes one for the other; part B
    is right on 2 and 3 and swaps 0 and 1. Each alone is right on half the classes; no single weight is right on more."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), videos_per_class)
    rng.shuffle(labels)

    def expert(knows):
        probabilities = rng.uniform(0.01, 0.05, (len(labels), 4))
        for row, label in enumerate(labels):
            guess = label if label in knows else label ^ 1  # 0<->1, 2<->3
            probabilities[row, guess] = rng.uniform(0.6, 0.9)
            probabilities[row, guess ^ 1] = rng.uniform(0.05, 0.2)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    return labels, expert((0, 1)), expert((2, 3))


def _balanced_accuracy(labels, probabilities):
    predicted = probabilities.argmax(axis=1)
    return np.mean([np.mean(predicted[labels == code] == code) for code in np.unique(labels)])


def test_the_classwise_stack_follows_each_part_on_the_classes_it_knows():
    labels, a, b = _two_experts(4, seed=0)  # validation: 16 videos, as a demo fold has
    test_labels, test_a, test_b = _two_experts(50, seed=1)
    stack, fit = fit_combiner("classwise", labels, [a, b])
    weight, _ = fit_combiner("weight", labels, [a, b])
    assert fit["val_cross_entropy"] < fit["val_cross_entropy_even"]
    stacked = _balanced_accuracy(test_labels, combine(stack, [test_a, test_b]))
    single = _balanced_accuracy(test_labels, combine(weight, [test_a, test_b]))
    alone = max(_balanced_accuracy(test_labels, test_a), _balanced_accuracy(test_labels, test_b))
    assert stacked >= 0.95, stacked
    assert stacked > single + 0.1 and stacked > alone + 0.2, (stacked, single, alone)


def test_the_single_weight_is_chosen_by_validation_cross_entropy():
    labels = np.array([0, 1, 0, 1])
    right, wrong, unsure = np.eye(2)[labels] * 0.9 + 0.05, np.eye(2)[1 - labels] * 0.9 + 0.05, np.full((4, 2), 0.5)
    assert fit_combiner("weight", labels, [right, wrong])[0].weights[:, 0].tolist() == [1.0, 0.0], "the GRU is right: all on it"
    assert fit_combiner("weight", labels, [unsure, right])[0].weights[:, 0].tolist() == [0.0, 1.0], "the appearance model is right"
    tie, grid = fit_combiner("weight", labels, [right, right])
    assert tie.weights[:, 0].tolist() == [0.5, 0.5] and len(grid) == 11, "a tie: an even mix"
    three, grid = fit_combiner("weight", labels, [unsure, wrong, right])
    assert three.weights[:, 0].tolist() == [0.0, 0.0, 1.0] and len(grid) == 66


def test_combined_probabilities_are_probabilities_and_no_worse_than_even_on_validation():
    labels, a, b = _two_experts(3, seed=4)
    for method in ("classwise", "weight"):
        combiner, _ = fit_combiner(method, labels, [a, b])
        found = combine(combiner, [a, b])
        np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-9)
        assert np.all(found >= 0)
        assert cross_entropy(labels, found) <= cross_entropy(labels, (a + b) / 2) + 1e-9


def test_a_class_missing_from_validation_keeps_an_even_product():
    labels, a, b = _two_experts(3, seed=5)
    keep = labels != 3
    stack, _ = fit_combiner("classwise", labels[keep], [a[keep], b[keep]])
    assert np.all(np.isfinite(stack.weights)) and np.all(stack.weights >= 0)
    empty, fit = fit_combiner("classwise", labels[:0], [a[:0], b[:0]])
    np.testing.assert_allclose(empty.weights, 0.5)
    assert fit["val_cross_entropy"] == 0.0

"""Captioned digit pairs: a dataset that tests language, not just labels (issue 16).

A canvas is two digits side by side, [H, 2W, C] from two [H, W, C] digits of a labelled source (scikit-learn's
8x8 digits -> 8x16; MNIST -> 28x56). Its caption is one of two templates that order the words differently:

    "three left of eight"   and   "eight right of three"    both mean: 3 on the left, 8 on the right.

The ordered pairs (L, R) with R = (L + 3) mod 10 are held out of the train split in both templates, so a model must
compose words it has seen into pairs it has not; the test split has all 100 pairs. The data source
"pairs:<source>" (e.g. "pairs:digits", "pairs:mnist", "pairs:npz:/path/mnist.npz") loads it via `make_pairs`.
"""

from __future__ import annotations

import numpy as np

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("{left} left of {right}", "{right} right of {left}")
TRAIN_SIZE = 20_000   # canvases in the train split (at least; the source's size if larger)
TEST_SIZE = 2_000


def held_out(left, right):
    """True where the ordered pair (left, right) is held out of training: right = (left + 3) mod 10."""
    return np.asarray(right) == (np.asarray(left) + 3) % 10


def caption(left: int, right: int, template: int) -> str:
    """The caption of a canvas with digit `left` on the left and `right` on the right in template 0 or 1."""
    return TEMPLATES[template].format(left=NUMBER_WORDS[left], right=NUMBER_WORDS[right])


def all_pairs(held: bool) -> list[tuple[int, int]]:
    """The held-out ordered pairs (10 of them), or the 90 seen ones."""
    return [(a, b) for a in range(10) for b in range(10) if bool(held_out(a, b)) == held]


def make_pairs(images: np.ndarray, labels: np.ndarray, split: str, seed: int = 0):
    """(canvases uint8 [N, H, 2W, C], digits int32 [N, 2] (left, right), templates int32 [N], captions [N]).

    Split "train": max(TRAIN_SIZE, len(images)) canvases over the 90 seen pairs; "test": TEST_SIZE over all 100.
    Pairs and templates are uniform; each digit is a uniformly drawn image of its class from `images`.
    Deterministic in (split, seed).
    """
    if split not in ("train", "test"):
        raise ValueError(f"digit pairs: unknown split {split!r}; accepted: 'train', 'test'.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or set(np.unique(labels).tolist()) != set(range(10)):
        raise ValueError("digit pairs need a source labelled with all ten digits 0..9 (labels [N]).")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    pairs = np.asarray(all_pairs(False) + (all_pairs(True) if split == "test" else []), np.int32)
    n = max(TRAIN_SIZE, len(images)) if split == "train" else TEST_SIZE
    digits = pairs[rng.integers(len(pairs), size=n)]
    templates = rng.integers(len(TEMPLATES), size=n).astype(np.int32)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    index = np.stack([np.array([by_class[c][rng.integers(len(by_class[c]))] for c in digits[:, k]])
                      for k in range(2)], axis=1)
    canvases = np.concatenate([images[index[:, 0]], images[index[:, 1]]], axis=2)
    captions = tuple(caption(int(a), int(b), int(t)) for (a, b), t in zip(digits, templates))
    return canvases, digits, templates, captions

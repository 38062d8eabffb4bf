"""One home for checks of user-facing values: names from a fixed set, numbers in a range, labels, counts.

The Python API and the CLI call these same functions, so both refuse the same values with the same message; a
whole config is checked by `config_schema.validate_config`, made of these. This module sits at the bottom of the
package's import graph: it imports none of the package's modules, so every module can use it.
Values no run can mean are refused (ValueError naming the value and what is accepted) before anything is
loaded or compiled; legal values that are rarely meant (a learning rate above 1, DDIM's eta above 1) give one
`SuspiciousValueWarning` per process.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Iterable

import numpy as np


class SuspiciousValueWarning(UserWarning):
    """A legal value that is rarely meant: a learning rate above 1, DDIM's eta above 1."""


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A SuspiciousValueWarning with `message`, the first time this message comes up in the process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, SuspiciousValueWarning, stacklevel=3)


def check_choice(kind: str, value, accepted: Iterable[str]) -> None:
    """Raise ValueError naming `value` and the accepted names unless it is one of them."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"Unknown {kind} {value!r}; accepted: {', '.join(accepted)}.")


def check_count(name: str, value, minimum: int = 1) -> None:
    """Raise ValueError unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise ValueError unless `value` is a finite real number between `low` and `high` (None: unbounded), the
    ends excluded where `low_open` / `high_open`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lower = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        upper = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {lower}, {upper}, got {value!r}.")


def check_eta(eta, name: str = "eta") -> None:
    """DDIM's eta: refused below 0; above 1 (noisier than ancestral sampling, which DDIM allows) a warning."""
    check_number(name, eta, 0.0)
    if eta > 1:
        warn_once(f"DDIM eta = {eta} is above 1: each step adds more noise than ancestral sampling (eta = 1). "
                  "DDIM allows it, but it is rarely meant; 0 is deterministic.")


def check_labels(labels, num_classes: int, where: str) -> None:
    """Raise ValueError unless every label is in [0, num_classes), the range of a class-conditional model."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{where}: labels must be in [0, {num_classes}) for a model with config.model.num_classes = "
            f"{num_classes}; {int(bad.sum())} of {labels.size} are outside it (min {labels.min()}, max "
            f"{labels.max()}). Fix the labels, or set config.model.num_classes to cover them.")


def parse_labels(text: str, name: str = "--labels") -> np.ndarray:
    """Comma-separated integer class labels ("3,7,1") as int32 [K]; ValueError naming the entry that is not one."""
    values = []
    for entry in str(text).split(","):
        try:
            values.append(int(entry))
        except ValueError:
            raise ValueError(f"{name} takes comma-separated integer class labels (e.g. {name} 3,7,1), got "
                             f"{entry.strip()!r} in {text!r}.") from None
    return np.asarray(values, np.int32)


def check_run_labels(labels, num_classes, text: bool, name: str = "--labels") -> None:
    """Labels given for a run: a text-conditional run takes a prompt, an unconditional one none, a
    class-conditional one labels in [0, num_classes). Checked from the run's config, before anything loads."""
    if text:
        raise ValueError(f"a text-conditional run takes --prompt, not {name}.")
    if num_classes is None:
        raise ValueError(f"{name} needs a class-conditional run; this one is unconditional (config.model.num_classes "
                         "is None): leave out the labels.")
    check_labels(labels, num_classes, name)


def check_evaluation_counts(num_samples, bpd_examples, samples_name: str = "num_samples",
                            bpd_name: str = "bpd_examples", *, feature_net=True,
                            feature_name: str = "feature_net") -> None:
    """evaluate's two counts: samples for the sample metrics (>= 0) and images for bits/dim (None: all; >= 0);
    both 0 would measure nothing and write an empty report, so that is refused; so is bits/dim 0 without a
    feature network (`feature_net` None: the sample metrics need one, so nothing would be measured either).
    `feature_net`: the feature network given (a spec or a network), or None; the default counts as given."""
    check_count(samples_name, num_samples, 0)
    if bpd_examples is not None:
        check_count(bpd_name, bpd_examples, 0)
    if num_samples == 0 and bpd_examples == 0:
        raise ValueError(f"{samples_name} 0 and {bpd_name} 0 leave nothing to evaluate: give {samples_name} >= 1 "
                         f"(with a feature network) for FID/IS/KID/precision-recall, or {bpd_name} >= 1 (or leave "
                         "it out: all images of the split) for bits/dim.")
    if bpd_examples == 0 and feature_net is None:
        raise ValueError(f"{bpd_name} 0 without {feature_name} leaves nothing to evaluate: the sample metrics need "
                         f"a feature network and {bpd_name} 0 skips bits/dim. Give {feature_name} classifier:DIR, "
                         f"inception:WEIGHTS.npz or inception:packaged (with {samples_name} >= 1) for "
                         f"FID/IS/KID/precision-recall, or {bpd_name} >= 1 (or leave it out: all images of the "
                         "split) for bits/dim.")


def check_guidance(guidance_scale, conditional: bool, has_labels: bool) -> None:
    """Classifier-free guidance: a scale other than 1 needs a class-conditional model and labels."""
    check_number("guidance scale", guidance_scale)
    if guidance_scale != 1 and not (conditional and has_labels):
        raise ValueError(
            f"guidance scale {guidance_scale} needs class labels: classifier-free guidance mixes the conditional and "
            "unconditional predictions of a class-conditional model. "
            + ("Pass labels (--labels)." if conditional else "This model is unconditional (config.model.num_classes "
               "is None): use guidance scale 1."))


def check_sampler_settings(num_steps=None, eta=None) -> None:
    """A sampler's num_steps (None: its default; else an integer >= 1; the schedule bounds it when sampling) and
    eta (None, or see `check_eta`)."""
    if num_steps is not None:
        check_count("num_steps", num_steps)
    if eta is not None:
        check_eta(eta)

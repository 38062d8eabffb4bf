"""Which way a dataset's images face, per class, and whether a run's samples face the same way: the test for
`config.data.random_flip`, which is right only for data whose mirror image is as likely as the image itself.

    python benchmarks/mirror_asymmetry.py --source npz:/data/fashion_mnist.npz \
        --workdirs runs/fashion_flipped,runs/fashion_mnist --out benchmarks/results/mirror_asymmetry_fashion.json

Per image, the left-right asymmetry a = (mass of the left half - mass of the right half) / total mass, pixel values
mapped to [0, 1] (background 0). Per class, of the split's images (--split, default train) and of each run's
samples (--num-samples, balanced labels, the run's own sampler and EMA params): the mean of a and the fraction of
images heavier on the right (a < 0). A class whose real images all lean one way (fraction near 0 or 1) is one a
horizontal flip turns into images the data never hold; a model trained with flips draws both ways (near 1/2).
With --feature-net (a classifier of the dataset, `train-classifier`), also the fraction of each class's samples the
classifier assigns to the class they were drawn for ("agreement"), and of the split's images to their label.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def asymmetry(images01):
    """a [N] of images [N, H, W, C] in [0, 1]: (left-half mass - right-half mass) / mass."""
    import numpy as np

    x = np.asarray(images01, np.float64).sum(-1)
    half = x.shape[2] // 2
    left, right = x[:, :, :half].sum((1, 2)), x[:, :, x.shape[2] - half:].sum((1, 2))
    return (left - right) / np.maximum(x.sum((1, 2)), 1e-12)


def per_class(a, labels, num_classes: int, predicted=None) -> list[dict]:
    """Per class c: count, mean of a, fraction with a < 0, and (given predicted labels) the fraction predicted c."""
    import numpy as np

    rows = [dict(label=c, count=int(np.sum(labels == c)), mean=float(np.mean(a[labels == c])),
                 fraction_negative=float(np.mean(a[labels == c] < 0))) for c in range(num_classes)]
    if predicted is not None:
        for c, row in enumerate(rows):
            row["agreement"] = float(np.mean(predicted[labels == c] == c))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="a data source with labels, e.g. npz:/data/fashion_mnist.npz")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workdirs", default="", help="comma-separated class-conditional runs to sample")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-net", default=None, help="classifier:DIR: also score each class's agreement")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from ddpm_jax import data, runs
    from ddpm_jax.sample_quality import resolve_feature_network, sample_features

    monitor = common.LoadMonitor()
    arrays = data.load_arrays(args.source, args.split)
    if arrays.labels is None:
        raise SystemExit(f"{args.source!r} split {args.split!r} has no labels: the asymmetry is measured per class")
    num_classes = int(arrays.labels.max()) + 1
    network = resolve_feature_network(args.feature_net)

    def predicted(images):  # images in [-1, 1]
        return None if network is None else sample_features(network, images, arrays.max_value)["logits"].argmax(-1)

    real = arrays.images / arrays.max_value
    sets = {f"{args.split} split": per_class(asymmetry(real), arrays.labels, num_classes, predicted(real * 2 - 1))}
    for workdir in filter(None, args.workdirs.split(",")):
        run = runs.load_run(workdir)
        labels = runs.balanced_labels(args.num_samples, num_classes)
        samples = runs.sample(run.config, run.params, jax.random.fold_in(jax.random.PRNGKey(args.seed), 0),
                              args.num_samples, run.image_shape(), labels=labels)
        name = f"{workdir} (step {run.step}, random_flip={bool(run.config.data.random_flip)})"
        sets[name] = per_class(asymmetry((np.clip(samples, -1, 1) + 1) / 2), labels, num_classes, predicted(samples))

    names = list(sets)
    cell = lambda r: f"{r['mean']:+.3f} / {r['fraction_negative']:.2f}" + (f" / {r['agreement']:.2f}"
                                                                             if "agreement" in r else "")
    rows = [[str(c)] + [cell(sets[n][c]) for n in names] for c in range(num_classes)]
    text = ("per class: mean left-right asymmetry a / fraction of images heavier on the right (a < 0)"
            + (" / classifier agreement" if network else "") + "\n\n"
            + common.table(["class"] + names, rows))
    common.report(text, monitor.stop(), args.out, source=args.source, split=args.split, seed=args.seed,
                  num_samples=args.num_samples, feature_network=network.name if network else None, sets=sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""grain (the JAX ecosystem's input pipeline) against the hand-written `data.Pipeline`: which of the Pipeline's
guarantees grain keeps, and batches per second. Not a test: prints what holds and a table.

    pip install grain          # not a dependency of the package
    python benchmarks/grain_vs_pipeline.py --out benchmarks/results/grain_vs_pipeline.json
    python benchmarks/grain_vs_pipeline.py --quick

The Pipeline's guarantees (ddpm_jax/data.py): (1) the global batches are the same for any number of hosts and
devices (host p takes rows [p G/P, (p+1) G/P) of global batch k); (2) exact resume at a batch from a small state;
(3) every epoch visits every example once, batches straddle epoch boundaries (nothing dropped).

grain is tried in the two forms its documentation gives:
* DataLoader + IndexSampler with ShardOptions per host (what `ShardByJaxProcess` does): each host reads its own
  contiguous shard of the records and shuffles within it;
* MapDataset: range(N).shuffle(seed).repeat() (a new permutation per epoch), batch(G) of the global batch's
  indices, then one vectorized map_with_index per batch: the flips of global batch k, each host's rows, gather and
  convert (a per-element random_map for the flips was slower still: 212 against 318 batches/s on digits, one run).
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

from ddpm_jax import data


def _dataloader(arrays, G, seed, p, P):
    import grain.python as gp

    source = gp.RangeDataSource(0, len(arrays.images), 1)
    sampler = gp.IndexSampler(len(arrays.images), gp.ShardOptions(p, P, drop_remainder=True), shuffle=True,
                              num_epochs=None, seed=seed)
    loader = gp.DataLoader(data_source=source, sampler=sampler, operations=[gp.Batch(G // P, drop_remainder=True)],
                           worker_count=0)
    return iter(loader)


def _map_dataset(arrays, G, seed, flip, p, P, D):
    """Batch k of host p (of P, D devices each), shaped as the Pipeline's."""
    import grain

    L = G // P
    ds = grain.MapDataset.range(len(arrays.images)).shuffle(seed=seed).repeat().batch(G)

    def load(k, global_idx):
        idx = global_idx[p * L:(p + 1) * L]
        images = arrays.images[idx]
        if flip:  # drawn for the whole global batch k, then sliced: the same on any number of hosts
            flips = (np.random.default_rng([seed, k, 1]).random(G) < 0.5)[p * L:(p + 1) * L]
            images[flips] = images[flips, :, ::-1]
        out = {"image": data.to_float(images, arrays.max_value).reshape((D, L // D) + images.shape[1:])}
        if arrays.labels is not None:
            out["label"] = arrays.labels[idx].reshape(D, L // D)
        return out

    return ds.map_with_index(load)


def _indexed(n, shape=(3, 4, 1)):
    rng = np.random.default_rng(0)
    return data.Arrays(rng.integers(0, 256, (n,) + shape, dtype=np.uint8), np.arange(n, dtype=np.int32), 255)


def guarantees() -> list[list[str]]:
    """[guarantee, DataLoader+IndexSampler holds it, MapDataset holds it] for the Pipeline's three guarantees."""
    n, G = 1003, 64  # n not a multiple of G: batches straddle epochs

    arrays = _indexed(n)

    def global_labels_loader(P, k):
        its = [_dataloader(arrays, G, 0, p, P) for p in range(P)]
        return [np.concatenate([next(it).reshape(-1) for it in its]) for _ in range(k)]

    def global_labels_map(P, k):
        dss = [_map_dataset(arrays, G, 0, True, p, P, 2) for p in range(P)]
        return [np.concatenate([ds[i]["label"].reshape(-1) for ds in dss]) for i in range(k)]

    fns = (global_labels_loader, global_labels_map)
    # (1) the same global batches on 1, 2 and 4 hosts
    same = [all(all(np.array_equal(a, b) for a, b in zip(fn(1, 40), fn(P, 40))) for P in (2, 4)) for fn in fns]
    # (3) every epoch visits every example once (40 batches of 64 = 2.55 epochs of 1003, one host)
    covers = []
    for fn in fns:
        stream = np.concatenate(fn(1, 40))
        covers.append(all(sorted(stream[e * n:(e + 1) * n]) == list(range(n)) for e in range(2)))

    # (2) exact resume at batch 17 from the iterator state
    def resumes(make, equal):
        it = make()
        for _ in range(17):
            next(it)
        state = it.get_state()
        expected = [next(it) for _ in range(5)]
        again = make()
        again.set_state(state)
        return all(equal(a, b) for a, b in zip(expected, [next(again) for _ in range(5)]))

    resume = [resumes(lambda: _dataloader(arrays, G, 0, 0, 1), np.array_equal),
              resumes(lambda: iter(_map_dataset(arrays, G, 0, True, 0, 1, 2)),
                      lambda a, b: all(np.array_equal(a[k], b[k]) for k in a))]
    return [["(1) same global batches on 1, 2 and 4 hosts", str(same[0]), str(same[1])],
            ["(2) exact resume at a batch from the iterator state", str(resume[0]), str(resume[1])],
            ["(3) each epoch visits every example once, nothing dropped", str(covers[0]), str(covers[1])]]


def _rate(next_batch, batches):
    for _ in range(5):
        next_batch()
    t0 = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return batches / (time.perf_counter() - t0)


def throughput(batches: int) -> list[list[str]]:
    import grain

    rng = np.random.default_rng(0)
    cifar = data.Arrays(rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                        rng.integers(0, 10, 50_000, dtype=np.int32), 255)
    rows = []
    for name, arrays, G in [("digits 1500x8x8x1, G=64", data.load_arrays("digits"), 64),
                            ("cifar-sized 50000x32x32x3, G=128", cifar, 128)]:
        kw = dict(global_batch_size=G, seed=0, random_flip=True, num_devices=8, process_index=0, process_count=1)
        p0 = data.make_iterator(arrays, prefetch=0, **kw)
        p2 = data.make_iterator(arrays, prefetch=2, **kw)
        ds = _map_dataset(arrays, G, 0, True, 0, 1, 8)
        threaded = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
        rates = [_rate(lambda it=it: next(it), batches) for it in (p0, p2, iter(ds), threaded)]
        p2.close()
        rows.append([name] + [common.fmt(r, ".0f") for r in rates])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=200, help="batches timed per loader (default 200)")
    p.add_argument("--quick", action="store_true", help="20 batches per loader")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    batches = 20 if args.quick else args.batches
    load = common.LoadMonitor()
    held = guarantees()
    rates = throughput(batches)
    load = load.stop()
    text = (common.table(["guarantee of data.Pipeline", "grain DataLoader+IndexSampler", "grain MapDataset"], held)
            + f"\n\nbatches/s, 1 host, 8 devices, random flips, {batches} batches after 5 warm-up\n"
            + common.table(["data", "Pipeline prefetch=0", "Pipeline prefetch=2", "MapDataset",
                            "MapDataset to_iter_dataset (2 threads)"], rates))
    common.report(text, load, args.out, guarantees=held, throughput=rates, batches=batches)


if __name__ == "__main__":
    main()

"""One process of the multi-process training test (run by tests/test_multihost.py, not collected by pytest).

    python tests/multihost_worker.py PORT PROCESS_ID NUM_PROCESSES WORKDIR OUT.npz [--features] [--config.x=y ...]

Two forced CPU devices per process, gloo collectives; trains the tiny test config and saves the final params.
With --features it then also runs test_sharded_features.multihost_case (sample features, reference features,
FID/IS on all devices of both processes) and saves its results as "features_<key>".
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

from ddpm_jax import parallel, train  # noqa: E402


def main():
    port, process_id, num_processes, workdir, out, *overrides = sys.argv[1:]
    features = "--features" in overrides
    overrides = [o for o in overrides if o != "--features"]
    parallel.initialize_distributed(f"localhost:{port}", int(num_processes), int(process_id), cpu_collectives="gloo")
    from test_train import tiny_config

    result = train.train_and_evaluate(tiny_config(*overrides), workdir, progress=False)
    leaves = jax.tree_util.tree_leaves(result["state"].params)
    extra = {}
    if features:
        from test_sharded_features import multihost_case

        extra = {f"features_{k}": v for k, v in multihost_case().items()}
    np.savez(out, step=result["step"], steps_run=result["steps_run"], loss=result["metrics"]["loss"],
             **{f"p{i}": leaf for i, leaf in enumerate(leaves)}, **extra)


if __name__ == "__main__":
    main()

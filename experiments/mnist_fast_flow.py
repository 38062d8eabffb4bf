"""experiments/mnist_fast.py's class-conditional 718k U-Net (batch 32, Adam 2e-3 with warmup and cosine decay, EMA
0.999, label dropout 0.1) trained by flow matching (rectified flow: Lipman et al. 2023, Liu et al. 2023) instead of
DDPM: x_t = (1 - t) x0 + t eps, the U-Net regressing the velocity eps - x0, fed 1000 t, with t logit-normal
(Esser et al. 2024, SD3: t = sigmoid(n), n ~ N(0, 1)); 1,800 steps; sampled with DPM-Solver++(2M) SDE in 20 steps,
x0 unclipped.
Weighting "none" in place of mnist_fast's "min_snr" (flow matching regresses its target with a plain MSE).

    python -m ddpm_jax train --config experiments/mnist_fast_flow.py --workdir runs/mnist_fast_flow \
        --config.data.source=npz:/path/to/mnist.npz          # or the tfds default, source "mnist"
    python -m ddpm_jax sample --workdir runs/mnist_fast_flow --num 500 --out runs/mnist_fast_flow/samples.png

Measured on this 2-core Intel VM, quiet, as a new user runs it: 356 s for the training process (compiles
included), 16.8 s for `sample --num 500`: 6.2 minutes in all. FID of 500 samples against the test split, the
project's MNIST classifier `npz-mnist:183a8e88a0` (real data 5.36), mean +- standard deviation over 5 sampling seeds
(benchmarks/fid_seeds.py):

| recipe | FID | / real | IS |
|---|---|---:|---:|
| this one: 1,800 steps, logit-normal t, x0 unclipped | **6.05 +- 0.34** (5.63-6.42) | **1.13x** | 9.08 |
| the same run sampled with x0 clipped to [-1, 1] | 6.27 +- 0.35 (5.85-6.68) | 1.17x | 9.08 |
| 1,800 steps, uniform t | 6.55 +- 0.29 (6.13-6.80) | 1.22x | 9.04 |
| 1,500 steps, uniform t (this file before) | 7.30 +- 0.34 (6.73-7.57) | 1.36x | 9.02 |
| mnist_fast.py (DDPM, min-SNR, 1,500 steps), one seed | 8.38 | 1.56x | 8.69 |

(benchmarks/results/fid_seeds_mnist_fast_flow{_1800_logit_unclipped,_1800_logit,_1800,}.json; the rows but the first
clip x0; training times in time_to_quality_mnist_fast_flow_1800{_logit,}.json.) All 5 seeds score under 1.2x real
(6.43). 1,800 steps, not mnist_fast.py's 1,500: on this VM a step takes 0.19 s, so 1,800 fill the 7 minutes with the
sampling (mnist_fast.py was timed on a slower AMD EPYC, 365 s for 1,500 steps; there, 1,500 steps of this recipe
fit). Every sampler but "ancestral" (a discrete schedule's) samples it; it defines no bits/dim here.
"""

import os

from ddpm_jax.configs import load_config, use_flow_matching

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = use_flow_matching(load_config(os.path.join(HERE, "mnist_fast.py")), t_distribution="logit_normal")
    config.train.num_steps = 1800
    config.sample.update(sampler="dpm++2m-sde", num_steps=20, clip_denoised=False)
    return config

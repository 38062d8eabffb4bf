"""MNIST given 30 minutes on 2 CPU cores: the 1.19M-parameter MNIST U-Net, class-conditional.

    python -m ddpm_jax train --config experiments/mnist.py --workdir runs/mnist
    # offline, from a local copy of the arrays (keys x_train, y_train, x_test, y_test):
    python -m ddpm_jax train --config experiments/mnist.py --workdir runs/mnist \
        --config.data.source=npz:/path/to/mnist.npz
    python -m ddpm_jax sample --workdir runs/mnist --num 500 --out runs/mnist/samples.png   # digits 0-9 in turn

ch 32, multipliers (1, 2, 2) (28 -> 14 -> 7), attention at 7x7 (`unet.PRESETS["mnist"]`); T = 1000 linear; the
recipe of experiments/mnist_fast.py (class embedding with label dropout 0.1, min-SNR-5 weighting, Adam 2e-3 with
cosine decay, batch 32, EMA 0.999 with warmup, DPM-Solver++(2M) SDE in 20 steps) on a network 2.6x the FLOPs,
for the longer budget: 3,800 steps of batch 32 (122k images).

Measured on 2 quiet CPU cores (AMD EPYC) as a new user runs it, compiles included (benchmarks/time_to_quality.py,
checkpoints scored on the way; 500 samples against the test split, the project's MNIST classifier
`npz-mnist:183a8e88a0`; real data: FID 5.36 for 500 training images, IS 8.80 for 500 test images):

| step (images seen) | training clock | FID (/ real) | IS (% of real) |
|---:|---:|---|---|
| 950 (30k) | 437 s | 16.77 (3.13x) | 8.19 (93.0%) |
| 1,900 (61k) | 829 s | 9.74 (1.82x) | 8.97 (101.8%) |
| 2,850 (91k) | 1,232 s | 6.72 (1.25x) | 9.20 (104.5%) |
| 3,800 (122k), the end | 1,609 s | **6.65 (1.24x)** | **9.14 (103.8%)** |

26.8 minutes of training (~75 images/s), 37 s for `sample --num 500`; experiments/mnist_fast.py reaches FID 8.38 in
6.5 minutes. The earlier rows are checkpoints of this run, before the learning rate had decayed, not shorter runs.
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.update(source="mnist", random_flip=False)
    config.model.update(unet.PRESETS["mnist"], num_classes=10)
    config.diffusion.weighting = "min_snr"
    config.train.update(num_steps=3800, batch_size=32, learning_rate=2e-3, lr_schedule="cosine", warmup_steps=100,
                        ema_decay=0.999, ema_warmup=True, label_dropout=0.1, log_every=100, checkpoint_every=1000,
                        sample_every=0, keep_checkpoints=2)
    config.sample.update(sampler="dpm++2m-sde", num_steps=20)
    return config

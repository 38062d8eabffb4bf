"""Fashion-MNIST given 30 minutes on 2 CPU cores: experiments/mnist.py's network and recipe on clothes, with flips.

    python -m ddpm_jax train --config experiments/fashion_mnist.py --workdir runs/fashion_mnist
    # offline: --config.data.source=npz:/path/to/fashion_mnist.npz (keys x_train, y_train, x_test, y_test)
    python -m ddpm_jax sample --workdir runs/fashion_mnist --num 500 --out runs/fashion_mnist/samples.png

Garments are mirror-symmetric, so horizontal flips double the data for free; the ten classes condition the
U-Net as the digits do (label dropout 0.1, so guidance works).

Measured on 2 quiet CPU cores (AMD EPYC) as a new user runs it, compiles included (benchmarks/time_to_quality.py;
500 samples against the test split; feature network `train-classifier --dataset npz:FASHION_NPZ`, 90.1% test
accuracy; real data: FID 1.61 for 500 training images, IS 7.16 for 500 test images):

| step (images seen) | training clock | FID (/ real) | IS (% of real) |
|---:|---:|---|---|
| 950 (30k) | 421 s | 20.33 (12.6x) | 5.49 (76.6%) |
| 1,900 (61k) | 818 s | 17.88 (11.1x) | 5.99 (83.7%) |
| 2,850 (91k) | 1,222 s | 13.05 (8.1x) | 6.25 (87.3%) |
| 3,800 (122k), the end | 1,628 s | **11.70 (7.3x)** | **6.40 (89.4%)** |

27.1 minutes of training. Recognizable garments of every class, short of real data in texture; the curve is still
falling, so more steps (`--config.train.num_steps`) go further. docs/time_to_quality.md has the comparison.
"""

import os

from ddpm_jax.configs import load_config


def get_config():
    config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist.py"))
    config.data.update(source="fashion_mnist", random_flip=True)
    return config

"""Sample-quality metrics and their feature networks.

    from ddpm_jax import metrics

    net = metrics.inception_feature_network(metrics.load_fid_inception_params("pt_inception-2015-12-05.npz"))
    real = metrics.dataset_statistics(net, batches, "stats/cifar10_train.npz")        # cached RunningStats
    fake = metrics.extract_features(net, sample_batches)                             # {"features", "logits"}
    fid = metrics.frechet_distance(real.mean(), real.cov(), fake_mu, fake_sigma)
    is_mean, is_std = metrics.inception_score(fake["logits"], splits=10)
    kid_mean, kid_std = metrics.kid(real_features, fake["features"], subset_size=1000)
    precision, recall = metrics.precision_recall(real_features, fake["features"], k=3)

Every number depends on the feature network: report `net.name` (stored in every statistics file) with it.

Modules: frechet (FID, RunningStats), inception_score, kid, precision_recall, feature_network
(FeatureNetwork, extract_features, extract_features_sharded (on all devices of all processes), dataset_statistics),
inception (the FID Inception-v3 and its weights).
"""

from ddpm_jax.metrics.feature_network import (
    FeatureNetwork,
    dataset_statistics,
    extract_features,
    extract_features_sharded,
    iterate_images,
)
from ddpm_jax.metrics.frechet import RunningStats, frechet_distance, load_stats, trace_sqrt_product
from ddpm_jax.metrics.inception import (
    FID_INCEPTION_NAME,
    FIDInceptionV3,
    export_fid_inception_params,
    fid_inception_params_from_state_dict,
    inception_feature_network,
    init_fid_inception,
    PACKAGED_INCEPTION_NAME,
    load_fid_inception_params,
    load_packaged_inception_params,
    preprocess,
    read_torchscript_tensors,
    state_dict_from_tf_names,
)
from ddpm_jax.metrics.inception_score import inception_score
from ddpm_jax.metrics.kid import kid, mmd2_unbiased
from ddpm_jax.metrics.precision_recall import knn_radii, precision_recall

__all__ = [
    "FeatureNetwork", "dataset_statistics", "extract_features", "extract_features_sharded", "iterate_images",
    "RunningStats", "frechet_distance", "load_stats", "trace_sqrt_product",
    "FID_INCEPTION_NAME", "FIDInceptionV3", "export_fid_inception_params", "fid_inception_params_from_state_dict",
    "inception_feature_network", "init_fid_inception", "load_fid_inception_params", "preprocess",
    "PACKAGED_INCEPTION_NAME", "load_packaged_inception_params", "read_torchscript_tensors", "state_dict_from_tf_names",
    "inception_score", "kid", "mmd2_unbiased", "knn_radii", "precision_recall",
]

"""Fine-tuning with cross-validation (Kensert et al. 2019): folds, augmentation, training,
aggregation of predictions, and the cached-trunk mode."""

"""Fine-tuning with cross-validation (Kensert et al. 2019): folds, augmentation, fold jobs
over replicate seeds, and the cached-trunk mode. Scoring lives in :mod:`cellmorph.evaluation`."""

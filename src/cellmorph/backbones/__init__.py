"""Backbones through timm: any model name, with weights from the hub, a file or the bundle."""

from cellmorph.backbones.fusion import fold_batchnorm
from cellmorph.backbones.registry import (
    PAPER_MODELS,
    check_model,
    check_weights,
    create_backbone,
    data_config,
    default_input_size,
    has_depthwise_convolutions,
    load_weights,
    load_weights_file,
)

__all__ = ["PAPER_MODELS", "check_model", "check_weights", "create_backbone", "data_config",
           "default_input_size", "fold_batchnorm", "has_depthwise_convolutions", "load_weights",
           "load_weights_file"]

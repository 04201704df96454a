"""FLAVR and binary FLAVR: ``build_model(config)`` builds either from one configuration dict."""
from model.builder import (DEFAULT_CONFIG, build_model, describe_config, model_config,
                           strip_module_prefix, transfer_weights)

__all__ = ["DEFAULT_CONFIG", "build_model", "describe_config", "model_config",
           "strip_module_prefix", "transfer_weights"]

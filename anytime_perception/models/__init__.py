"""Pure-PyTorch anytime HRNet: backbones, exits, confidence adaptivity, checkpoints and FLOPs (no ROS here)."""
from .anytime import AnytimeHRNet, AnytimeState, ExitResult, Step
from .configs import BACKBONES, ModelConfig
from .execution import EXECUTION_NAMES, resolve_execution
from .registry import create_model, list_models, model_config

__all__ = ["AnytimeHRNet", "AnytimeState", "ExitResult", "Step", "BACKBONES", "ModelConfig", "create_model",
           "list_models", "model_config", "EXECUTION_NAMES", "resolve_execution"]

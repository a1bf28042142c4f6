"""anytime_perception: confidence-adaptive anytime HRNet for ROS 2 (segmentation and pose)."""
__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for the frame player or the messages) must not pay for importing torch.
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'anytime_perception' has no attribute {name!r}")

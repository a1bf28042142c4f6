"""anytime_perception: confidence-adaptive anytime HRNet for ROS 2 (segmentation and pose)."""
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]

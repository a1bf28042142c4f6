"""The model-input transform: OpenCV normalisation on the CPU, and the on-device path (uint8 upload, normalise on the
device) that CUDA nodes use, which must give the same input (checked here on CPU tensors)."""
import numpy as np
import pytest
import torch

from anytime_perception.data.preprocess import Preprocessor, normalise, normalise_on_device, normalizer
from anytime_perception.models import create_model


@pytest.mark.parametrize("task_model", ["adpc_hrnet_w18s_seg", "adpc_hrnet_w18s_pose"])
def test_on_device_normalisation_equals_the_opencv_one(task_model):
    model = create_model(task_model)
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    scale, offset = normalizer(model)
    on_cpu = torch.from_numpy(normalise(rgb, scale, offset))
    on_device = normalise_on_device(rgb, torch.from_numpy(scale).view(3, 1, 1), torch.from_numpy(offset).view(3, 1, 1),
                                    "cpu")
    assert on_device.shape == (3, 37, 53) and on_device.dtype == torch.float32
    torch.testing.assert_close(on_device, on_cpu, rtol=0, atol=2e-6)
    # the mean colour maps to 0, as the network was trained with
    mean = np.round(np.asarray(model.config.task_spec.mean) * 255).astype(np.uint8)
    flat = normalise_on_device(np.broadcast_to(mean, (2, 2, 3)), torch.from_numpy(scale).view(3, 1, 1),
                               torch.from_numpy(offset).view(3, 1, 1), "cpu")
    assert flat.abs().max() < 0.01


def test_preprocessor_resizes_then_normalises_on_its_device():
    model = create_model("adpc_hrnet_w18s_seg")
    rgb = np.full((48, 64, 3), 128, np.uint8)
    pre = Preprocessor(model, (24, 32), "cpu")
    resized = pre.resized(rgb)
    assert resized.shape == (24, 32, 3)
    tensor = pre.tensor(resized)
    assert tensor.shape == (3, 24, 32) and tensor.device.type == "cpu"
    if torch.cuda.is_available():
        on_gpu = Preprocessor(model, (24, 32), "cuda").tensor(resized)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), tensor, rtol=0, atol=2e-6)

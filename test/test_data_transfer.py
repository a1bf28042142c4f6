"""`to_host`: several tensors to host arrays in one copy; the packing (what a GPU download runs) checked on CPU."""
import numpy as np
import pytest
import torch

from anytime_perception.data.transfer import ALIGNMENT, to_host


def exit_like_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "labels": torch.randint(0, 19, (13, 17), generator=gen, dtype=torch.uint8),  # 221 bytes: unaligned end
        "confidence": torch.rand(13, 17, generator=gen),
        "computed": torch.rand(13, 17, generator=gen) > 0.5,
        "cost": torch.tensor([0.4375, 12.625], dtype=torch.float64),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.int32).reshape(3, 4).t(),  # not contiguous
        "half": torch.rand(5, generator=gen).half(),
    }


def test_packed_copy_equals_each_tensor():
    tensors = exit_like_tensors()
    packed = to_host(tensors, packed=True)
    assert list(packed) == list(tensors)
    for name, t in tensors.items():
        array = packed[name]
        assert array.dtype == t.numpy().dtype and array.shape == tuple(t.shape), name
        np.testing.assert_array_equal(array, t.numpy(), err_msg=name)
        assert array.ctypes.data % ALIGNMENT == 0, name
        assert not array.flags.writeable  # views of one shared buffer
        assert not np.shares_memory(array, t.numpy())  # a copy, as from a device
    starts = sorted(a.ctypes.data for a in packed.values())
    assert starts[-1] - starts[0] < 4096  # one buffer (these tensors take under 2 kB)


def test_cpu_tensors_are_shared_without_a_copy():
    t = torch.arange(6.0)
    array = to_host({"t": t})["t"]
    t[0] = 42.0
    assert array[0] == 42.0


def test_clear_errors():
    assert to_host({}) == {}
    with pytest.raises(ValueError, match="several devices"):
        to_host({"a": torch.zeros(2), "b": torch.zeros(2, device="meta")})
    with pytest.raises(TypeError, match="bfloat16"):
        to_host({"a": torch.zeros(2, dtype=torch.bfloat16)}, packed=True)


def test_exit_tensors_of_a_model_run():
    from anytime_perception import create_model
    from anytime_perception.data.transfer import exit_tensors, segmentation_tensors

    from anytime_perception.models.untrained import randomise_weights

    model = create_model("adpc_hrnet_w18s_seg", criterion="top_ratio", top_ratio=0.5).eval()
    randomise_weights(model, 0)  # the initialisation's logits are ~1e-18, ties everywhere
    with torch.inference_mode():
        first, second = list(model.anytime(torch.randn(2, 3, 32, 64)))[:2]
    assert set(exit_tensors(first, 1)) == {"cost"}  # exit 1 computes everything: no mask to send
    tensors = segmentation_tensors(second, 1)
    assert {k: t.dtype for k, t in tensors.items()} == {"cost": torch.float64, "computed": torch.uint8,
                                                         "confidence": torch.float32, "labels": torch.uint8}
    assert tensors["cost"].tolist() == [float(second.computed_fraction[1]), float(second.gflops[1])]
    assert torch.equal(tensors["computed"] == 255, second.compute_mask[1] > 0.5)
    assert torch.equal(tensors["labels"], second.logits[1].argmax(dim=0).to(torch.uint8))

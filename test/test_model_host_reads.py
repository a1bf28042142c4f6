"""The staged forward reads no tensor value on the host, so on a GPU the steps queue without waiting for it.

Two views of the same property: on the `meta` device (no values at all: every read raises) the whole schedule,
exits included, runs; on the CPU under `HostReads` (which also catches `.cpu()`, `.numpy()`, `.tolist()`) it
records nothing. The GFLOPs count and computed fractions stay tensors on the model's device for the caller to read.
The Triton backend's forward is checked the same way in test_gpu_backend.py.
"""
from pathlib import Path

import cv2
import pytest
import torch

from anytime_perception import create_model
from anytime_perception.data.preprocess import Preprocessor
from conftest import HostReads

NAME = "adpc_hrnet_w18s_seg"
PERSON = "adpc_hrnet_w18s_person_seg"
FRAMES = Path(__file__).resolve().parent / "data" / "person_held_out" / "images"


def run_all_steps(model, images):
    results = []
    with torch.inference_mode():
        state = model.begin(images, adaptive=True)
        while not state.finished:
            result = model.advance(state)
            if result is not None:
                results.append(result)
    return results


def test_whole_schedule_runs_on_the_meta_device():
    model = create_model(NAME, execution="emulate").eval().to("meta")
    results = run_all_steps(model, torch.empty(2, 3, 64, 96, device="meta"))
    assert [r.index for r in results] == [1, 2, 3, 4]
    for r in results:
        assert r.gflops.device.type == r.computed_fraction.device.type == "meta"
        assert r.gflops.shape == r.computed_fraction.shape == (2,)


def held_out_frames(size=(96, 128)) -> torch.Tensor:
    """Two of the shipped held-out frames, resized and normalised: what the person model has masks on."""
    frames = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in sorted(FRAMES.glob("*.jpg"))[:2]]
    preprocess = Preprocessor(create_model(PERSON), size)
    return torch.stack([preprocess.tensor(preprocess.resized(frame)) for frame in frames])


@pytest.mark.parametrize("criterion", ["max_prob", "neg_entropy", "top_ratio", "random"])
def test_no_host_reads_in_a_forward(criterion):
    """The shipped person model on real frames: its confidence masks skip some pixels of every exit."""
    def model():  # a new one each time: the random criterion's generator starts over
        return create_model(PERSON, pretrained=True, execution="emulate", criterion=criterion,
                            random_compute_prob=0.5).eval()

    images = held_out_frames()
    reference = run_all_steps(model(), images)
    measured = model()
    with HostReads() as reads:
        results = run_all_steps(measured, images)
    assert reads.reads == []
    fractions = torch.stack([r.computed_fraction for r in results[1:]])
    assert (fractions < 1).any() and (fractions > 0).all()  # masks were in force: the masked paths ran
    for got, want in zip(results, reference):
        assert torch.equal(got.logits, want.logits) and torch.equal(got.gflops, want.gflops)


def test_host_reads_catches_what_it_claims():
    t = torch.arange(6.0)
    with HostReads() as reads:
        t.sum().item(), bool(t[0] > 1), t[t > 2], t.nonzero(), t.cpu(), t.numpy(), t.tolist()
        with reads.paused():
            float(t[1])
    assert reads.reads == ["aten._local_scalar_dense.default", "aten._local_scalar_dense.default",
                           "aten.index.Tensor", "aten.nonzero.default", "Tensor.cpu", "Tensor.numpy", "Tensor.tolist"]
    assert torch.Tensor.cpu is not None and "recording" not in torch.Tensor.cpu.__qualname__

"""The Triton backend (models/gpu/) against the emulation, its kernels run on CPU tensors by Triton's interpreter.

TRITON_INTERPRET=1 must be set when Triton decorates the kernels (kernels.py's import) and while they run (parts
of Triton's language check it at call time). It is set while this module imports them and during its tests only
(`_interpreter_variable`), so it never leaks into other tests or the subprocesses they start. If another test module
imported the kernels first (compiled mode), the module is reloaded under the interpreter. The interpreter runs each
program's ops in Python, so maps and channel counts stay tiny.
"""
import contextlib
import dataclasses
import importlib
import os

import pytest
import torch
from torch import nn

from conftest import HostReads, dependency_missing

@contextlib.contextmanager
def _interpreter_variable():
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous


with _interpreter_variable():
    try:
        from triton.runtime import interpreter

        from anytime_perception.models.gpu import execution as gpu_execution
        from anytime_perception.models.gpu import kernels
    except ImportError as error:
        dependency_missing(error, "Triton (the gpu extra)")
    if not kernels.INTERPRETED:
        kernels = importlib.reload(kernels)


@pytest.fixture(autouse=True, scope="module")
def _interpret_during_these_tests():
    with _interpreter_variable():
        yield


# The interpreter checks every int32 index operation for overflow by redoing it in int64 (about a third of its time
# here); these maps are far too small to overflow, and the compiled kernels never check.
interpreter.interpreter_builder.options = dataclasses.replace(interpreter.interpreter_builder.options,
                                                              sanitize_overflow=False)

from anytime_perception import create_model  # noqa: E402
from anytime_perception.models.execution import auto_candidates, make_execution, resolve_execution  # noqa: E402
from anytime_perception.models.gpu import TritonExecution, tiles  # noqa: E402
from anytime_perception.models.masked_conv import ConvUnit, EmulatedExecution, MaskedConv2d  # noqa: E402
from anytime_perception.models.masks import ComputeMask  # noqa: E402
from anytime_perception.models.untrained import randomise_weights  # noqa: E402

# fp16: inputs and weights rounded to fp16 (relative 2^-11 each), products accumulated in fp32, the output rounded to
# fp16 again: a few fp16 ulps of the largest output. bfloat16 is not checked here: Triton 3.9's interpreter
# multiplies bf16 operands of tl.dot as their raw 16-bit patterns (its create_dot converts only fp8 types), so the
# bf16 path is exercised on a GPU only.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-3}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12)).item()


def random_bn(channels: int, gen: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return bn


def run_unit(kernel, stride, *, dtype=torch.float32, residual=True, relu=True, bias=True, lam=3.0, share=0.2,
             size=(19, 27), c_in=12, c_out=20, base=None, tile=tiles.TILE):
    """(Triton output in `dtype`, emulated fp32 output, execution) of one conv unit on a random batch of 2 with
    per-image masks; `share` of the pixels computed."""
    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    conv = MaskedConv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias, lambda_init=lam)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (c_in * kernel * kernel) ** 0.5)
        if bias:
            conv.bias.copy_(torch.randn(c_out, generator=gen))
    bn = random_bn(c_out, gen)
    x = torch.randn(2, c_in, *size, generator=gen)
    ho, wo = conv.output_size(*size)
    if base is None:
        base = (torch.rand(2, 1, ho, wo, generator=gen) < share).float()
    res = torch.randn(2, c_out, ho, wo, generator=gen) if residual else None
    unit = ConvUnit(conv, bn, relu)
    execution = TritonExecution(tile=tile)
    execution.stats = {}
    with torch.no_grad():
        ref = unit.run(x, ComputeMask(base, EmulatedExecution()), res)  # fp32: half precision is judged against it
        half = None if res is None else res.to(dtype)
        got = unit.run(x.to(dtype), ComputeMask(base.to(dtype), execution), half)
    return got, ref, execution


def test_tile_table_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    base = (torch.rand(2, 1, 19, 27, generator=gen) < 0.02).float()
    base[1] = 0
    base[1, 0, 18, 26] = 1  # the partial corner tile of image 1
    table = tiles.tile_table(ComputeMask(base, TritonExecution()), 19, 27, 8)
    assert (table.tiles_y, table.tiles_x, table.total) == (3, 4, 24)
    expected = torch.zeros(2, 3, 4, dtype=torch.bool)
    for b, _, y, x in torch.nonzero(base).tolist():
        expected[b, y // 8, x // 8] = True
    assert torch.equal(table.active, expected.reshape(-1))
    count = int(table.count.item())
    assert count == int(expected.sum())
    assert sorted(table.order[:count].tolist()) == torch.nonzero(expected.reshape(-1)).reshape(-1).tolist()
    near = torch.nn.functional.max_pool2d(expected[:, None].float(), 3, 1, 1)[:, 0] > 0
    assert torch.equal(table.near.bool(), near.reshape(-1))
    r = tiles.REACH
    assert table.computed.shape == (2, 19 + 2 * r, 27 + 2 * r) and int(table.computed.sum()) == int(base.sum())
    assert torch.equal(table.computed[:, r:-r, r:-r], base[:, 0].to(torch.uint8))
    mask = ComputeMask(base, TritonExecution())
    assert tiles.tile_table(mask, 19, 27) is tiles.tile_table(mask, 19, 27)  # memoised per mask and resolution


@pytest.mark.parametrize("kernel,stride,residual,relu,bias,lam", [
    (1, 1, False, False, True, 3.0),  # exit-head conv: bias, nothing after it
    (1, 1, True, True, False, 3.0),  # bottleneck conv3 with its residual
    (3, 1, True, True, False, 1.5),  # a wider fill: 20 RBF offsets instead of 8
    (3, 2, False, True, False, 3.0),  # stride-2 transition / fuse conv on an odd map
])
def test_unit_equals_emulation(kernel, stride, residual, relu, bias, lam):
    got, ref, execution = run_unit(kernel, stride, residual=residual, relu=relu, bias=bias, lam=lam)
    assert execution.stats == {"triton": 1}
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert rel_err(got, ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("tile", [8, 16])  # one tile per program (64 and 256 GEMM rows); 4x4 is the default
def test_larger_tiles(tile):
    got, ref, _ = run_unit(3, 1, tile=tile, size=(19, 37), share=0.1)
    assert rel_err(got, ref) < TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match="power of two >= 4"):  # 4: the fill must not reach past the next tile
        TritonExecution(tile=6)


def test_4x4_tiles_four_to_a_program_across_images_and_a_partial_last_group():
    assert [kernels.tiles_per_program(t) for t in (4, 8, 16)] == [4, 1, 1]
    base = torch.zeros(2, 1, 10, 11)
    for b, ty, tx in [(0, 0, 0), (0, 1, 2), (0, 2, 1), (1, 0, 1), (1, 2, 2)]:  # 5 of 18 tiles: groups of 4 and 1
        base[b, 0, ty * 4 + 1, tx * 4 + 2] = 1.0
    got, ref, execution = run_unit(3, 1, tile=4, size=(10, 11), base=base)
    assert execution.stats == {"triton": 1}
    assert rel_err(got, ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_nothing_or_everything_computed(share):
    got, ref, _ = run_unit(3, 1, share=share, size=(9, 10))
    assert rel_err(got, ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 2)])
def test_float16_within_stated_tolerance(kernel, stride):
    got, ref, _ = run_unit(kernel, stride, dtype=torch.float16, size=(11, 13))
    assert got.dtype == torch.float16
    assert rel_err(got, ref) < TOLERANCE[torch.float16]


def test_gradients_and_training_batchnorm_do_not_run_the_kernels():
    conv = MaskedConv2d(4, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4).eval()
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    execution = TritonExecution()
    execution.stats = {}
    mask = ComputeMask((torch.rand(1, 1, 8, 8) < 0.5).float(), execution)
    ConvUnit(conv, bn, True).run(x, mask).sum().backward()
    assert execution.stats == {"emulate": 1} and x.grad is not None


def test_tensors_the_kernels_do_not_run_on_go_to_the_cpu_sparse_backend(monkeypatch):
    monkeypatch.setattr(gpu_execution, "kernels_run_on", lambda device: False)  # as for CPU tensors, compiled
    got, ref, execution = run_unit(3, 1, size=(9, 10))
    assert set(execution.stats) <= {"cpp-sparse", "cpp-dense", "torch-sparse", "torch-dense"}
    assert rel_err(got, ref) < TOLERANCE[torch.float32]


def test_execution_table():
    assert resolve_execution("sparse", "cuda")[0] == "triton"  # Triton imports here
    assert resolve_execution("auto", "cuda")[0] == "emulate"  # until the tiles are measured faster
    assert auto_candidates("cuda") == ("emulate", "triton")  # which a node does at its input size
    assert resolve_execution("triton", "cpu") == ("triton", "requested")  # interpreter
    assert isinstance(make_execution("triton"), TritonExecution)
    assert "interpreted" in TritonExecution().describe("cpu")
    assert gpu_execution.kernels_run_on("cpu") and not gpu_execution.kernels_run_on("mps")


def test_whole_model_every_exit_batch_of_two():
    name = "adpc_hrnet_w18s_seg"
    emulated = create_model(name, criterion="random", random_compute_prob=0.5)
    randomise_weights(emulated, 0)
    triton = create_model(name, criterion="random", random_compute_prob=0.5, execution="triton")
    triton.load_state_dict(emulated.state_dict())
    emulated.eval(), triton.eval()
    assert isinstance(triton.execution, TritonExecution)
    triton.execution.stats = {}
    x = torch.randn(2, 3, 32, 32)  # the smallest input: every map is one tile per image, the fewest programs
    with torch.no_grad():
        ref = list(emulated.anytime(x))
        got = list(triton.anytime(x))
    assert len(got) == len(ref) == 4
    for r, g in zip(ref, got):
        assert rel_err(g.logits, r.logits) < TOLERANCE[torch.float32], r.index
        if r.compute_mask is not None:
            assert torch.equal(r.compute_mask, g.compute_mask)
    fractions = torch.stack([r.computed_fraction for r in ref[1:]])
    assert ((fractions > 0.05) & (fractions < 0.95)).all()
    assert not torch.equal(ref[1].compute_mask[0], ref[1].compute_mask[1])  # per-image masks differ
    assert set(triton.execution.stats) == {"triton"}


def test_forward_reads_nothing_on_the_host_once_weights_are_folded(monkeypatch):
    """Between and at exits the Triton backend's schedule (tile tables, launches with the active-tile count on the
    device) reads no tensor value on the host. The first forward folds BN into the weights once per weight version
    (it reads each conv's RBF width); the interpreted kernels themselves copy their arguments, so they are paused."""
    model = create_model("adpc_hrnet_w18s_seg", criterion="top_ratio", top_ratio=0.5, execution="triton").eval()
    randomise_weights(model, 0)
    x = torch.randn(1, 3, 32, 32)  # one tile per map: the fewest interpreted programs
    with torch.inference_mode():
        first = list(model.anytime(x))
    reads = HostReads()
    kernels_in_use = gpu_execution.load_kernels()
    for name in ("conv_tiles", "finish"):
        launch = getattr(kernels_in_use, name)
        monkeypatch.setattr(kernels_in_use, name, lambda *a, _launch=launch, **k: _paused(reads, _launch, *a, **k))
    model.execution.stats = {}
    with reads, torch.inference_mode():
        again = list(model.anytime(x))
    assert reads.reads == []
    assert model.execution.stats["triton"] > 0
    for r, g in zip(first, again):
        assert torch.equal(r.logits, g.logits)


def _paused(reads, launch, *args, **kwargs):
    with reads.paused():
        return launch(*args, **kwargs)

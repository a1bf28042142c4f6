"""Sparse execution (`execution="sparse"`) equals the authors' dense emulation: every conv kind, whole models at
every exit, random and real masks, batches with different masks per image, the C++ extension and the PyTorch path."""
import copy
import os

import pytest
import torch
from torch import nn

from anytime_perception import create_model
from anytime_perception.models.blocks import BasicBlock, conv_bn
from anytime_perception.models.execution import make_execution
from anytime_perception.models.masked_conv import EmulatedExecution, MaskedConv2d
from anytime_perception.models.masks import ComputeMask
from anytime_perception.models.sparse import SparseExecution, _ext, extension, tables, units
from anytime_perception.models.sparse.benchmark_masks import ScriptedCriterion, shipped_frames, synthetic_difficulty
from anytime_perception.models.sparse.fold import fold_batchnorm
from anytime_perception.models.untrained import calibrate_untrained, randomise_weights
from conftest import OFFICIAL_REF

HAVE_EXT = extension() is not None
# Outside CI a checkout without the built extension still tests the PyTorch path; in CI (where tools/setup-venv.sh
# builds it) a missing extension fails these cases instead of skipping them.
NEEDS_EXT = pytest.mark.skipif(not HAVE_EXT and not os.environ.get("CI"), reason="C++ extension not built")
BACKENDS = [pytest.param("cpp", marks=NEEDS_EXT), "torch"]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12)).item()


def test_extension_is_built_in_ci():
    """The install path (tools/setup-venv.sh) builds the extension; CI must exercise it, not only the fallback."""
    if os.environ.get("CI") and not HAVE_EXT:
        pytest.fail(f"sparse C++ extension not built: {_ext.load_error()}")


def test_registered_and_selectable():
    assert make_execution("sparse").name == "sparse"
    model = create_model("adpc_hrnet_w18s_seg", execution="sparse")
    assert isinstance(model.execution, SparseExecution)
    with pytest.raises(ValueError, match="backend"):
        SparseExecution(backend="gpu")


# ----- units: every conv kind HRNet uses ------------------------------------------------------------------------
def random_unit(c_in, c_out, k, s, bias, bn, relu, lam=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    seq = conv_bn(MaskedConv2d, c_in, c_out, k, s, 0.1, relu=relu)
    conv = seq[0]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (c_in * k * k) ** 0.5)
        conv.Lambda.fill_(lam)
        if bias:
            conv.bias = nn.Parameter(torch.randn(c_out, generator=gen))
        seq[1].weight.uniform_(0.5, 1.5, generator=gen)
        seq[1].bias.normal_(0, 0.5, generator=gen)
        seq[1].running_mean.normal_(0, 0.5, generator=gen)
        seq[1].running_var.uniform_(0.5, 2.0, generator=gen)
    if not bn:
        seq = nn.Sequential(conv)
    return seq.eval()


def reference(seq, x, mask_base, residual, relu):
    y = seq[0](x, ComputeMask(mask_base, EmulatedExecution()))
    for layer in list(seq)[1:]:
        if isinstance(layer, nn.BatchNorm2d):
            y = layer(y)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y


KINDS = {  # c_in, c_out, k, stride, bias, bn, relu, residual
    "1x1": (12, 16, 1, 1, False, True, False, False),
    "3x3": (12, 16, 3, 1, False, True, True, False),
    "3x3-stride2": (12, 16, 3, 2, False, True, True, False),
    "3x3-block-residual": (16, 16, 3, 1, False, True, True, True),
    "1x1-fuse-up": (24, 8, 1, 1, False, True, False, False),
    "3x3-stride2-fuse-down": (8, 24, 3, 2, False, True, False, False),
    "1x1-exit-bias-bn-relu": (20, 12, 1, 1, True, True, True, False),
    "1x1-classifier-bias": (12, 5, 1, 1, True, False, False, False),
    "3x3-wide-odd-channels": (20, 72, 3, 1, False, True, True, False),  # several blocks of output channels
    "1x1-wide-odd-channels": (40, 100, 1, 1, True, True, False, False),
}


@pytest.mark.parametrize("backend", BACKENDS + [
    pytest.param("cpp-gather", marks=NEEDS_EXT)])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("path", ["sparse", "dense-fallback"])
def test_unit_equals_emulation(kind, backend, path, monkeypatch):
    """fp32: "cpp" = the AVX-512 direct kernel, "cpp-gather" = im2col gather + GEMM (the extension's bf16 route)."""
    if backend == "cpp-gather":
        monkeypatch.setattr(units, "USE_DIRECT", False)
        backend = "cpp"
    c_in, c_out, k, s, bias, bn, relu, residual = KINDS[kind]
    seq = random_unit(c_in, c_out, k, s, bias, bn, relu, seed=list(KINDS).index(kind))
    h, w = 18, 22
    x = torch.randn(3, c_in, h, w)
    ho, wo = seq[0].output_size(h, w)
    res = torch.randn(3, c_out, ho, wo) if residual else None
    gen = torch.Generator().manual_seed(1)
    masks = [(torch.rand(3, 1, ho, wo, generator=gen) < p).float() for p in (0.1, 0.5, 0.9)]
    masks.append(torch.stack([torch.ones(1, ho, wo), torch.zeros(1, ho, wo), (torch.rand(1, ho, wo) < 0.3).float()]))
    masks += [torch.ones(3, 1, ho, wo), torch.zeros(3, 1, ho, wo)]
    blobs = synthetic_difficulty(ho, wo, batch=3, seed=2, regions=4)  # blobs: long horizontal runs
    masks += [(blobs >= blobs.flatten().quantile(1 - p)).float()[:, None] for p in (0.3, 0.7)]
    ex = SparseExecution(backend=backend, dense_above=0.0 if path == "dense-fallback" else 1.01)
    ex.stats = {}
    for base in masks:
        ref = reference(seq, x, base, res, relu)
        with torch.no_grad():
            got = ex.unit(seq[0], seq[1] if bn else None, relu, x, ComputeMask(base, ex), res)
        assert got.shape == ref.shape
        assert rel_err(got, ref) < 1e-4, (kind, backend, path, base.mean().item())
    assert not any(key.startswith("emulate") for key in ex.stats)
    assert all(key.startswith(backend) for key in ex.stats)


@pytest.mark.parametrize("lam", [0.3, 1.5, 3.0, 4.5])
def test_rbf_offsets_cut_keeps_accuracy(lam):
    """The fill uses only offsets with non-negligible weight; any Lambda stays within 1e-4 of the full 7x7 fill."""
    seq = random_unit(6, 8, 3, 1, False, True, False, lam=lam)
    base = (torch.rand(2, 1, 20, 20) < 0.2).float()
    x = torch.randn(2, 6, 20, 20)
    ref = reference(seq, x, base, None, False)
    for backend in ("torch",) + (("cpp",) if HAVE_EXT else ()):
        ex = SparseExecution(backend=backend)
        with torch.no_grad():
            got = ex.unit(seq[0], seq[1], False, x, ComputeMask(base, ex))
        assert rel_err(got, ref) < 1e-4
    assert tables.offsets_needed(0.3) == 48
    assert tables.offsets_needed(3.0) == 8 and tables.offsets_needed(1.5) == 20


def test_residual_block_unit_and_gradients_fall_back_to_emulation():
    block = BasicBlock(MaskedConv2d, 8, 8, 0.1).eval()
    randomise_weights(block, 3)
    x = torch.randn(2, 8, 16, 16)
    base = (torch.rand(2, 1, 16, 16) < 0.4).float()
    ref = block(x, ComputeMask(base, EmulatedExecution()))
    ex = SparseExecution()
    ex.stats = {}
    with torch.no_grad():
        got = block(x, ComputeMask(base, ex))
    assert rel_err(got, ref) < 1e-4 and "emulate" not in ex.stats
    # with autograd on, the backend runs the (differentiable) emulation: same values, gradients flow
    out = block(x, ComputeMask(base, ex))
    assert rel_err(out, ref) < 1e-6 and ex.stats["emulate"] == 2
    out.sum().backward()
    assert block.conv1.weight.grad is not None


# ----- whole models ---------------------------------------------------------------------------------------------
def model_pair(name, seed=0, **overrides):
    emulated = create_model(name, **overrides)
    randomise_weights(emulated, seed)
    sparse = create_model(name, execution="sparse", **overrides)
    sparse.load_state_dict(emulated.state_dict())
    return emulated.eval(), sparse.eval()


def compare_models(emulated, sparse, x, tol=1e-4):
    with torch.no_grad():
        ref = list(emulated.anytime(x))
        got = list(sparse.anytime(x))
    assert len(got) == len(ref) == 4
    for r, g in zip(ref, got):
        assert rel_err(g.logits, r.logits) < tol, r.index
        if r.compute_mask is not None:
            assert torch.equal(r.compute_mask, g.compute_mask)
            assert torch.allclose(r.gflops, g.gflops)
    return ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,size", [("adpc_hrnet_w18s_seg", (64, 96)), ("adpc_hrnet_w32_pose", (64, 64))])
def test_whole_model_random_masks_every_exit(name, size, backend):
    emulated, sparse = model_pair(name, criterion="random", random_compute_prob=0.5)
    sparse.execution = SparseExecution(backend=backend)
    sparse.execution.stats = {}
    x = torch.randn(2, 3, *size)
    ref = compare_models(emulated, sparse, x)
    fractions = torch.stack([r.computed_fraction for r in ref[1:]])
    assert ((fractions > 0.05) & (fractions < 0.95)).all()
    assert not torch.equal(ref[1].compute_mask[0], ref[1].compute_mask[1])  # per-image masks differ
    assert set(sparse.execution.stats) <= {f"{backend}-sparse", f"{backend}-dense"}


def test_whole_model_all_computed_and_all_skipped():
    for criterion, kwargs in (("top_ratio", dict(top_ratio=0.0)), ("top_ratio", dict(top_ratio=1.0))):
        emulated, sparse = model_pair("adpc_hrnet_w18s_seg", criterion=criterion, **kwargs)
        ref = compare_models(emulated, sparse, torch.randn(1, 3, 64, 64))
        assert ref[1].computed_fraction.item() == (1.0 if kwargs["top_ratio"] == 0 else 0.0)


def test_tables_are_built_once_per_exit_and_resolution(monkeypatch):
    built = []
    original = tables.ActiveRows

    class Counting(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((self.height, self.width))

    monkeypatch.setattr(tables, "ActiveRows", Counting)
    _, sparse = model_pair("adpc_hrnet_w18s_seg", criterion="random")
    with torch.no_grad():
        list(sparse.anytime(torch.randn(1, 3, 64, 64)))
    per_exit = len(set(built))
    assert per_exit >= 3 and len(built) <= 3 * per_exit  # three masks, each resolution once per mask


def test_real_masks_from_calibrated_weights_on_shipped_frames():
    pytest.importorskip("cv2")
    frames = shipped_frames((96, 128), count=2)
    emulated = create_model("adpc_hrnet_w18s_seg")
    reached = calibrate_untrained(emulated, frames)
    assert reached == pytest.approx([0.18, 0.37, 0.62], abs=0.03)
    sparse = create_model("adpc_hrnet_w18s_seg", execution="sparse")
    sparse.load_state_dict(emulated.state_dict())
    compare_models(emulated, sparse.eval(), frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_units(backend):
    for kind in ("3x3-block-residual", "3x3-stride2", "1x1-exit-bias-bn-relu", "3x3-wide-odd-channels"):
        c_in, c_out, k, s, bias, bn, relu, residual = KINDS[kind]
        seq = random_unit(c_in, c_out, k, s, bias, bn, relu)
        x = torch.randn(2, c_in, 16, 20)
        ho, wo = seq[0].output_size(16, 20)
        res = torch.randn(2, c_out, ho, wo) if residual else None
        base = (torch.rand(2, 1, ho, wo) < 0.4).float()
        ref = reference(seq, x, base, res, relu)
        ex = SparseExecution(backend=backend, dense_above=1.01)
        seq16 = copy.deepcopy(seq).bfloat16()
        with torch.no_grad():
            got = ex.unit(seq16[0], seq16[1] if bn else None, relu, x.bfloat16(), ComputeMask(base.bfloat16(), ex),
                          res.bfloat16() if res is not None else None)
        assert got.dtype == torch.bfloat16
        assert rel_err(got, ref) < 3e-2, kind


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and " amx_tile" in line for line in cpuinfo)
    except OSError:
        return False


# Skipped only where the CPU has no AMX (or, outside CI, the extension is not built): on an AMX machine an extension
# built without its AMX kernel fails these tests instead of hiding behind a skip.
NEEDS_AMX = pytest.mark.skipif(not _cpu_has_amx() or (not HAVE_EXT and not os.environ.get("CI")),
                               reason="this CPU has no AMX (or, outside CI, the extension is not built)")


@NEEDS_AMX
@pytest.mark.parametrize("kind", list(KINDS))
def test_bfloat16_amx_kernel_equals_gather_gemm_and_emulation(kind, monkeypatch):
    """bf16 AMX tile kernel (gather fused, rows finished from the tiles): batch of 3 with different masks per image,
    odd sizes, every conv kind; equal to the gather + oneDNN GEMM route up to bf16 rounding of reordered fp32 sums,
    and as close to the fp32 emulation as bf16 allows."""
    assert extension() is not None and extension().amx_available(), "extension built without its AMX kernel"
    c_in, c_out, k, s, bias, bn, relu, residual = KINDS[kind]
    seq = random_unit(c_in, c_out, k, s, bias, bn, relu, seed=list(KINDS).index(kind))
    h, w = 19, 23
    x = torch.randn(3, c_in, h, w)
    ho, wo = seq[0].output_size(h, w)
    res = torch.randn(3, c_out, ho, wo) if residual else None
    gen = torch.Generator().manual_seed(5)
    masks = [(torch.rand(3, 1, ho, wo, generator=gen) < p).float() for p in (0.1, 0.5, 0.9)]
    masks.append(torch.stack([torch.ones(1, ho, wo), torch.zeros(1, ho, wo), (torch.rand(1, ho, wo) < 0.3).float()]))
    seq16 = copy.deepcopy(seq).bfloat16()
    x16 = x.bfloat16().contiguous(memory_format=torch.channels_last)
    res16 = res.bfloat16() if res is not None else None
    for base in masks:
        ref = reference(seq, x, base, res, relu)
        got = {}
        for amx in (True, False):
            monkeypatch.setattr(units, "USE_AMX", amx)
            ex = SparseExecution(backend="cpp", dense_above=1.01)
            with torch.no_grad():
                got[amx] = ex.unit(seq16[0], seq16[1] if bn else None, relu, x16, ComputeMask(base.bfloat16(), ex),
                                   res16)
        assert got[True].dtype == torch.bfloat16 and got[True].shape == ref.shape
        assert rel_err(got[True], got[False]) < 1e-2, (kind, base.mean().item())
        assert rel_err(got[True], ref) < 3e-2, (kind, base.mean().item())


@NEEDS_AMX
@pytest.mark.parametrize("kind", list(KINDS) + ["3x3-48ch", "3x3-96ch-residual", "1x1-64ch", "3x3-odd-40ch"])
def test_bfloat16_amx_direct_loads_equal_gathered(kind):
    """Runs of 16 consecutive active pixels whose window lies inside the row load their A tiles straight from x
    (K blocks straddling kernel rows or holding padding gathered, taps outside the image zero): bit-identical to
    gathering every row. Batch of 3 with different masks (long runs, image edges, single pixels), odd sizes."""
    assert extension() is not None and extension().amx_available(), "extension built without its AMX kernel"
    extra = {"3x3-48ch": (48, 48, 3, 1, False, True, True, False),
             "3x3-96ch-residual": (96, 96, 3, 1, False, True, True, True),
             "1x1-64ch": (64, 40, 1, 1, True, True, False, False),
             "3x3-odd-40ch": (40, 24, 3, 1, False, True, True, False)}
    c_in, c_out, k, s, bias, bn, relu, residual = KINDS.get(kind) or extra[kind]
    seq16 = random_unit(c_in, c_out, k, s, bias, bn, relu, seed=7).bfloat16()
    h, w = 21, 53
    x16 = torch.randn(3, c_in, h, w).bfloat16().contiguous(memory_format=torch.channels_last)
    ho, wo = seq16[0].output_size(h, w)
    res16 = torch.randn(3, c_out, ho, wo).bfloat16() if residual else None
    gen = torch.Generator().manual_seed(11)
    runs = torch.zeros(3, 1, ho, wo)
    runs[0, :, :, :] = 1  # every row: interior runs, first and last image rows (taps outside)
    runs[0, :, 5, 7] = 0
    runs[1, :, 2:9, 3:40] = 1  # a block with runs not aligned to 16
    runs[1, :, ho - 1, :] = 1
    runs[2] = (torch.rand(1, ho, wo, generator=gen) < 0.5).float()
    runs[2, :, 10, 1:30] = 1
    ext = extension()
    for base in (runs, (torch.rand(3, 1, ho, wo, generator=gen) < 0.9).float()):
        got = {}
        for direct in (True, False):
            ext.set_amx_direct(direct)
            try:
                ex = SparseExecution(backend="cpp", dense_above=1.01)
                with torch.no_grad():
                    got[direct] = ex.unit(seq16[0], seq16[1] if bn else None, relu, x16,
                                          ComputeMask(base.bfloat16(), ex), res16)
            finally:
                ext.set_amx_direct(True)
        assert torch.equal(got[True], got[False]), (kind, base.mean().item())


def test_fill_band_keep_marks_the_rows_the_fill_reads():
    gen = torch.Generator().manual_seed(3)
    base = (torch.rand(2, 1, 13, 17, generator=gen) < 0.4).float()
    mask = ComputeMask(base, SparseExecution())
    active = tables.active_rows(mask, 13, 17)
    band = tables.fill_band(mask, 13, 17, 8)
    read = set(band.tab[band.tab >= 0].tolist())
    expected = [1 if int(row) in read else 0 for row in active.act.tolist()]
    assert band.keep.tolist() == expected


def test_bfloat16_within_bf16_rounding():
    """bf16 (AMX on CPU): sparse bf16 is as close to fp32 as the emulation's own bf16 run (masks held fixed)."""
    emulated, sparse = model_pair("adpc_hrnet_w18s_seg", criterion="random")
    x = torch.randn(2, 3, 64, 96)
    gen = torch.Generator().manual_seed(4)
    masks = [torch.rand(2, 16, 24, generator=gen) < p for p in (0.8, 0.6, 0.4)]
    masks = [masks[0], masks[0] & masks[1], masks[0] & masks[1] & masks[2]]
    with torch.no_grad():
        emulated.criterion = ScriptedCriterion(masks)
        ref = [r.logits for r in emulated.anytime(x)]
        e16, s16 = copy.deepcopy(emulated).bfloat16(), copy.deepcopy(sparse).bfloat16()
        e16.criterion, s16.criterion = ScriptedCriterion(masks), ScriptedCriterion(masks)
        emu16 = [r.logits for r in e16.anytime(x.bfloat16())]
        sp16 = [r.logits for r in s16.anytime(x.bfloat16())]
    for k in range(4):
        e_err, s_err = rel_err(emu16[k], ref[k]), rel_err(sp16[k], ref[k])
        assert s_err < 2 * e_err + 2e-2, (k, e_err, s_err)


def test_pytorch_path_when_the_extension_is_unavailable(monkeypatch):
    monkeypatch.setitem(_ext._STATE, "module", None)
    emulated, sparse = model_pair("adpc_hrnet_w18s_seg", criterion="random")
    sparse.execution = SparseExecution()  # auto
    sparse.execution.stats = {}
    compare_models(emulated, sparse, torch.randn(1, 3, 64, 64))
    assert set(sparse.execution.stats) <= {"torch-sparse", "torch-dense"}
    with pytest.raises(RuntimeError, match="not built"):
        SparseExecution(backend="cpp")


def test_fold_batchnorm():
    emulated, _ = model_pair("adpc_hrnet_w18s_seg", criterion="top_ratio", top_ratio=0.4)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense = [r.logits for r in emulated.anytime(x, adaptive=False)]
        adaptive = [r.logits for r in emulated.anytime(x)]
        all_folded = fold_batchnorm(copy.deepcopy(emulated), include_masked=True)
        plain_folded = fold_batchnorm(copy.deepcopy(emulated))
        for a, b in zip(dense, (r.logits for r in all_folded.anytime(x, adaptive=False))):
            assert rel_err(b, a) < 1e-4
        for a, b in zip(adaptive, (r.logits for r in plain_folded.anytime(x))):  # masked convs kept their BN
            assert rel_err(b, a) < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in all_folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain_folded.modules())


# ----- the authors' reference -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_official_reference_logits_with_sparse_execution(official_ref, backend):
    model = create_model("adpc_hrnet_w18s_seg", checkpoint=OFFICIAL_REF,
                         conf_threshold=official_ref["config"]["conf_thre_T"], execution="sparse")
    model.execution = SparseExecution(backend=backend)
    with torch.no_grad():
        results = list(model.anytime(official_ref["input"]))
    for result, expected in zip(results, official_ref["logits_masked"]):
        assert (result.logits - expected).abs().max().item() < 1e-3
    for k, expected in enumerate(official_ref["masks"]):
        assert torch.equal(results[k + 1].compute_mask, expected)

"""Executions by name ("auto" included), the conv units blocks are written as, and a one-way import graph."""
import ast
from pathlib import Path

import pytest
import torch

from anytime_perception import create_model
from anytime_perception.models import EXECUTION_NAMES, resolve_execution
from anytime_perception.models.blocks import BasicBlock, Bottleneck, conv_bn
from anytime_perception.models.execution import EXECUTIONS, auto_candidates, make_execution, time_executions
from anytime_perception.models.masked_conv import ConvUnit, EmulatedExecution, MaskedConv2d, conv_units
from anytime_perception.models.masks import ComputeMask
from anytime_perception.models.sparse import SparseExecution, _ext, extension
from anytime_perception.models.untrained import randomise_weights

PACKAGE = Path(__file__).resolve().parents[1] / "anytime_perception"
# Subpackages whose modules must import one way (ros/, training/ and cli.py not yet: their cycles are being broken).
ONE_WAY = ("models", "runtime", "tasks", "data", "training", "ros")


@pytest.fixture
def extension_state(monkeypatch):
    """Pretend the sparse C++ extension loaded (a stand-in module) or failed to load (with a reason)."""
    def set_state(loaded: bool, error: str = "No module named '_sparse_cpu'"):
        monkeypatch.setattr(_ext, "_STATE", {"module": object()} if loaded else {"module": None, "error": error})
    return set_state


def test_table_names_and_unknown_names():
    assert EXECUTION_NAMES == ("auto", "emulate", "sparse", "triton")
    assert set(EXECUTIONS) == {"emulate", "sparse", "triton"}
    assert isinstance(make_execution("emulate"), EmulatedExecution)
    assert isinstance(make_execution("sparse"), SparseExecution)
    with pytest.raises(ValueError, match="unknown execution 'warp'; known: auto, emulate, sparse"):
        resolve_execution("warp")


def test_auto_is_sparse_on_cpu_only_with_the_extension(extension_state):
    extension_state(loaded=True)
    assert resolve_execution("auto", "cpu") == ("sparse", "auto on cpu: the sparse C++ extension is loaded")
    assert resolve_execution("auto", torch.device("cuda", 0))[0] == "emulate"
    assert resolve_execution("sparse", "cpu") == ("sparse", "requested")
    extension_state(loaded=False, error="disabled by ANYTIME_SPARSE_EXT=0")
    name, reason = resolve_execution("auto", "cpu")
    assert name == "emulate" and "disabled by ANYTIME_SPARSE_EXT=0" in reason
    name, reason = resolve_execution("sparse")  # explicit: honoured, but the slow path is said
    assert name == "sparse" and "plain PyTorch ops" in reason and "disabled" in reason
    assert SparseExecution().describe("cpu").startswith("sparse (plain PyTorch ops; C++ extension not loaded")
    name, reason = resolve_execution("auto", "cuda")
    assert name == "emulate" and "cuda" in reason
    assert resolve_execution("emulate", "cuda") == ("emulate", "requested")


def test_create_model_resolves_auto_and_reports_it():
    model = create_model("adpc_hrnet_w18s_seg", execution="auto", device="cpu")
    expected = "sparse" if extension() is not None else "emulate"
    assert model.config.execution == "auto" and model.execution.name == expected
    assert model.execution_reason == resolve_execution("auto", "cpu")[1]
    assert model.execution.describe("cpu") == ("sparse (C++ extension)" if expected == "sparse"
                                               else EmulatedExecution().describe())
    model.set_execution("emulate")
    assert isinstance(model.execution, EmulatedExecution) and model.execution_reason == "requested"
    torch_only = SparseExecution(backend="torch")
    assert not torch_only.uses_extension("cpu") and "backend='torch'" in torch_only.describe()
    assert not SparseExecution().uses_extension("cuda")


def test_time_executions_times_each_and_leaves_the_model_as_it_was(monkeypatch):
    model = create_model("adpc_hrnet_w18s_seg", criterion="top_ratio", top_ratio=0.5, execution="emulate").eval()
    randomise_weights(model, 0)
    before = model.execution
    calls = []
    original = model.set_execution

    def recording(name, device=None):
        calls.append(name)
        original(name, device)

    monkeypatch.setattr(model, "set_execution", recording)
    seconds = time_executions(model, torch.randn(1, 3, 64, 64), ("sparse", "emulate"), repeats=2)
    assert list(seconds) == ["sparse", "emulate"] == calls and all(0 < s < 60 for s in seconds.values())
    assert model.execution is before
    assert auto_candidates("cpu") == ()  # on the CPU the extension decides, no measuring


class RecordingExecution(EmulatedExecution):
    """The emulation, recording every unit it is asked to run."""

    def __init__(self):
        self.units = []

    def conv_unit(self, unit, x, mask, residual):
        self.units.append((unit, residual is not None))
        return super().conv_unit(unit, x, mask, residual)


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
def test_blocks_run_as_units_of_their_execution(block_cls):
    """Blocks hand their execution conv units (the residual with the last one); the result is the modules' own
    computation, bit for bit."""
    planes = 4
    downsample = conv_bn(MaskedConv2d, 6, planes * block_cls.expansion, 1, 2, 0.1, relu=False)
    block = block_cls(MaskedConv2d, 6, planes, 0.1, stride=2, downsample=downsample)
    randomise_weights(block, 1)
    block.eval()
    x = torch.randn(2, 6, 12, 10)
    base = (torch.rand(2, 1, 6, 5) < 0.5).float()
    execution = RecordingExecution()
    with torch.no_grad():
        got = block(x, ComputeMask(base, execution))
        emulated = ComputeMask(base, EmulatedExecution())
        pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
        pairs += [(block.conv3, block.bn3)] if block_cls is Bottleneck else []
        out = x
        for k, (conv, bn) in enumerate(pairs):
            out = bn(conv(out, emulated))
            out = torch.relu(out) if k < len(pairs) - 1 else out
        expected = torch.relu(out + downsample[1](downsample[0](x, emulated)))
    assert torch.equal(got, expected)
    convs = [(unit.conv, with_residual) for unit, with_residual in execution.units]
    units = block.units()
    assert convs == [(downsample[0], False)] + [(u.conv, k == len(units) - 1) for k, u in enumerate(units)]


def test_sequential_units_group_conv_bn_relu():
    head = torch.nn.Sequential(torch.nn.AvgPool2d(2), MaskedConv2d(4, 4, 1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), MaskedConv2d(4, 2, 1))
    units = conv_units(head)
    assert units[0] is head[0] and units[1] == ConvUnit(head[1], head[2], True)
    assert units[2] == ConvUnit(head[4], None, False) and len(units) == 3


def _imports(path: Path, module: str) -> set[str]:
    """Modules of this package that `path` (module `module`) imports, at any level of the file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts[:len(parts) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.module:  # `from . import x` imports the submodule x, not the package itself
                found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("anytime_perception")}


def test_no_import_cycles_below_ros():
    """The ONE_WAY subpackages import one way: no module reaches itself, even through an import made inside a
    function."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if len(parts) > 1 and parts[1] in ONE_WAY:
            modules[".".join(parts)] = path
    graph = {name: _imports(path, name) & set(modules) - {name} for name, path in modules.items()}
    assert "anytime_perception.models.flops" in graph["anytime_perception.models.sparse.benchmark_masks"]

    def cycle_from(start):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return trail + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c is not None]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)

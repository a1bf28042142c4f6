"""FLOPs in the paper's convention: Table 1 from the command line, and a cross-check against PyTorch's counter."""
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from anytime_perception import create_model
from anytime_perception.cli import main
from anytime_perception.models.flops import GIGA, dense_gflops_per_exit, gflops_for_fractions, step_cost_table


def cli_rows(capsys, *argv):
    assert main(list(argv)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return [line.split()[-1] for line in lines[2:] if not line.lstrip().startswith("mean")]


@pytest.mark.parametrize("name, size, expected", [
    ("rh_hrnet_w48_seg", "1024x2048", ["41.9", "105.6", "368.0", "701.3"]),
    ("hrnet_w48_seg", "1024x2048", ["696.2"]),
    ("rh_hrnet_w18s_seg", "1024x2048", ["23.7", "34.7", "49.9", "73.2"]),
    ("hrnet_w32_pose", "256x256", ["9.49"]),
    ("hrnet_w18s_seg", "1024x2048", ["71.6"]),  # the authors' README: 71.6 for the W18-Small-v2 base
])
def test_paper_table_from_the_cli(capsys, name, size, expected):
    assert cli_rows(capsys, "flops", name, "--size", size) == expected


def test_console_script_is_installed():
    exe = shutil.which("anytime-perception") or str(__import__("pathlib").Path(sys.executable).with_name("anytime-perception"))
    out = subprocess.run([exe, "flops", "rh_hrnet_w48_seg", "--size", "1024x2048"], capture_output=True, text=True,
                         check=True).stdout
    assert "701.3" in out


def test_adaptive_fractions_reduce_later_exits_only(capsys):
    assert main(["flops", "adpc_hrnet_w48_seg", "--fractions", "0.82,0.63,0.38"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:6]]
    dense = [float(r[1]) for r in rows]
    adaptive = [float(r[2]) for r in rows]
    assert adaptive[0] == dense[0] and all(a < d for a, d in zip(adaptive[1:], dense[1:]))
    assert main(["flops", "rh_hrnet_w48_seg", "--fractions", "0.5,0.5,0.5"]) == 2
    assert main(["flops", "adpc_hrnet_w48_seg", "--fractions", "0.5"]) == 2
    with pytest.raises(SystemExit):
        main(["flops", "adpc_hrnet_w48_seg", "--size", "big"])


def test_fraction_one_equals_dense_and_zero_leaves_only_unmasked_convs():
    cfg = create_model("adpc_hrnet_w18s_seg").config
    dense = dense_gflops_per_exit(cfg, (512, 1024))
    assert gflops_for_fractions(cfg, (512, 1024), [1.0, 1.0, 1.0]) == pytest.approx(dense)
    none = gflops_for_fractions(cfg, (512, 1024), [0.0, 0.0, 0.0])
    assert none[0] == dense[0] and none[-1] == pytest.approx(dense[0])  # p=0: nothing after exit 1, no RBF charge


@pytest.mark.parametrize("name, size", [("rh_hrnet_w18s_seg", (128, 256)), ("hrnet_w32_pose", (128, 96)),
                                        ("ee_hrnet_w18s_seg", (96, 160))])
def test_dense_count_matches_torch_flop_counter(name, size):
    model = create_model(name)
    ours = dense_gflops_per_exit(model.config, size)[-1]  # before counting: it traces a meta twin once per size
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, *size))
    # FlopCounterMode counts 2 x MACs of every conv (bias and pointwise ops excluded)
    assert counter.get_total_flops() / 2 / GIGA == pytest.approx(ours, rel=1e-9)


def test_step_table_names_follow_the_staged_forward():
    model = create_model("adpc_hrnet_w18s_seg")
    table = step_cost_table(model.config, (64, 64))
    assert [s.name for s in table] == model.step_names
    stem, layer1, exit1, transition1 = table[:4]
    assert not stem.masked and not exit1.masked and transition1.masked and not transition1.dense_macs

"""The scheduler on the real ADP-C model: a job suspended mid-exit, overtaken by another frame and resumed gives
exactly the results of an uninterrupted run (no recomputation, no state leaking between frames)."""
import pytest
import torch

from anytime_perception import create_model
from anytime_perception.runtime import AnytimeScheduler, FakeClock, Job, Policies

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def adaptive_model():
    # Random exit weights and top_ratio give non-trivial masks (half the pixels skipped after each exit), so the
    # resumed job has to carry its mask and carried-over logits through the interruption.
    model = create_model("adpc_hrnet_w18s_seg", criterion="top_ratio", top_ratio=0.5)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4 and ("exit" in name or "last_layer" in name):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_suspended_then_resumed_job_equals_an_uninterrupted_run():
    model = adaptive_model()
    g = torch.Generator().manual_seed(2)
    frame_a, frame_b = torch.randn(2, 1, 3, 64, 128, generator=g)
    with torch.inference_mode():
        reference = {"a": list(model.anytime(frame_a)), "b": list(model.anytime(frame_b))}
    assert 0 < float(reference["a"][2].computed_fraction) < 1

    results, ends = {"a": [], "b": []}, {}
    scheduler = AnytimeScheduler(
        model, clock=FakeClock(),
        policies=Policies.from_config({"deadline": "none", "suspend": {"name": "suspend", "max_age": 10.0}}),
        on_result=lambda r: results[r.job.source].append(r.exit), on_end=lambda e: ends.setdefault(e.job.source, e))
    scheduler.submit(Job(frame_a, stamp=0.0, source="a"))
    names = model.step_names
    for _ in range(names.index("stage2.0") + 1):  # exit 1 delivered, in the middle of exit 2's stretch
        assert scheduler.run_once()
    scheduler.submit(Job(frame_b, stamp=0.0, source="b", priority=1))
    steps = scheduler.run_until_idle()

    assert ends["a"].reason == "last_exit" and ends["a"].suspensions == 1
    assert ends["b"].reason == "last_exit"
    assert steps == 2 * len(names) - (names.index("stage2.0") + 1)  # nothing recomputed
    for source in ("a", "b"):
        got, want = results[source], reference[source]
        assert [r.index for r in got] == [1, 2, 3, 4]
        for g_, w in zip(got, want):
            assert torch.equal(g_.logits, w.logits)
            assert torch.equal(g_.confidence, w.confidence)
            assert (g_.compute_mask is None) == (w.compute_mask is None)
            if w.compute_mask is not None:
                assert torch.equal(g_.compute_mask, w.compute_mask)
            assert torch.equal(g_.computed_fraction, w.computed_fraction)
            assert torch.equal(g_.gflops, w.gflops)
    assert not torch.equal(results["a"][3].logits, results["b"][3].logits)
    stats = scheduler.stats()
    assert stats.balanced and stats.sources["a"].resumes == 1


def test_step_work_follows_the_flops_table():
    from anytime_perception.runtime.work import StepWork

    model = adaptive_model()
    work = StepWork(model)
    with torch.inference_mode():
        state = model.begin(torch.randn(2, 3, 64, 96))
        while not state.finished:
            i = state.next_step
            (estimate,) = work.of_steps(state, i, i)
            exact = float(model.step_gflops(state, i).sum())
            if state.mask is None:  # before the first mask: the same numbers
                assert estimate == pytest.approx(exact, rel=1e-12)
            else:  # one fraction for all resolutions: close, not exact
                assert estimate == pytest.approx(exact, rel=0.3)
            model.advance(state)

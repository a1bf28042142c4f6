"""Every scheduling policy on a scripted model and a fake clock: which exits come out, in which order, and why
jobs end. Step times (seconds) of the scripted model: stem 1, exit1 1, module2 2, exit2 1, module3 2, exit3 1,
module4 2, exit4 1, so a job started at t=0 delivers exits at t = 2, 5, 8, 11."""
import math

import pytest

from anytime_perception.runtime import Policies, SourceConfig
from anytime_perception.runtime.testing import DEFAULT_STEPS, SchedulerHarness

ALL_STEPS = [name for name, _ in DEFAULT_STEPS]


def harness(**kinds) -> SchedulerHarness:
    """Policies given by name (or {"name": ..., params}); deadlines ignored and nothing suspended unless asked."""
    config = {"deadline": "none", "suspend": "drop", **kinds}
    sources = config.pop("sources", None)
    return SchedulerHarness(policies=Policies.from_config(config), sources=sources)


def step_end_times(start: float = 0.0) -> list[float]:
    t, ends = start, []
    for _, seconds in DEFAULT_STEPS:
        t += seconds
        ends.append(t)
    return ends


# ----- frames -------------------------------------------------------------------------------------------------
def test_newest_frame_wins_after_the_first_exit():
    h = harness(frames="newest_wins")
    h.submit("f1")
    h.submit_at(0.5, "f2")  # during f1's stem
    h.run()
    assert h.steps_run("f1") == ["stem", "exit1"]
    (r,) = h.results_of("f1")
    assert r.exit_index == 1 and r.is_final and r.final_reason == "preempted"
    assert h.events == [("result", "f1", 1), ("end", "f1", "preempted"),
                        ("result", "f2", 1), ("result", "f2", 2), ("result", "f2", 3), ("result", "f2", 4),
                        ("end", "f2", "last_exit")]
    assert [r.is_final for r in h.results_of("f2")] == [False, False, False, True]
    assert h.scheduler.stats().preemption_reaction.max == 0.0  # stopped at the exit that made it preemptible


@pytest.mark.parametrize("arrival", [2.5, 3.9, 4.5, 6.0, 7.5, 9.0, 10.5])
def test_newer_frame_stops_the_old_one_at_the_end_of_the_step_it_arrived_in(arrival):
    h = harness(frames="newest_wins")
    h.submit("f1")
    h.submit_at(arrival, "f2")
    h.run()
    boundary = min(t for t in step_end_times() if t > arrival)
    f1_steps = [(s, end) for f, s, _, end in h.step_log() if f == "f1"]
    assert f1_steps[-1][1] == boundary  # nothing of f1 ran after the step in progress at the arrival
    f2_start = min(start for f, _, start, _ in h.step_log() if f == "f2")
    assert f2_start == boundary
    if boundary == 11.0:  # arrived during the last exit: f1 completes
        assert h.reason("f1") == "last_exit"
        assert h.scheduler.stats().preemptions == 0
    else:
        assert h.reason("f1") == "preempted"
        reaction = h.scheduler.stats().preemption_reaction
        assert reaction.count == 1 and reaction.max == pytest.approx(boundary - arrival)
    assert h.exits("f2") == [1, 2, 3, 4]


@pytest.mark.parametrize("min_exits, f1_exits, f1_steps", [
    (0, [], ["stem"]),
    (2, [1, 2], ALL_STEPS[:4]),
    (4, [1, 2, 3, 4], ALL_STEPS),
])
def test_min_exits_before_preempt(min_exits, f1_exits, f1_steps):
    h = harness(frames={"name": "newest_wins", "min_exits_before_preempt": min_exits})
    h.submit("f1")
    h.submit_at(0.5, "f2")
    h.run()
    assert h.exits("f1") == f1_exits
    assert h.steps_run("f1") == f1_steps
    assert h.reason("f1") == ("last_exit" if min_exits == 4 else "preempted")
    if f1_exits:
        assert h.results_of("f1")[-1].is_final
    assert h.exits("f2") == [1, 2, 3, 4]


def test_finish_then_latest_keeps_only_the_latest_waiting_frame():
    h = harness(frames="finish_then_latest")
    h.submit("f1")
    for t, name in [(1.0, "f2"), (3.0, "f3"), (6.0, "f4")]:
        h.submit_at(t, name)
    h.run()
    assert h.exits("f1") == [1, 2, 3, 4] and h.reason("f1") == "last_exit"
    assert h.reason("f2") == "superseded" and h.reason("f3") == "superseded"
    assert h.steps_run("f2") == [] and h.steps_run("f3") == []
    assert h.exits("f4") == [1, 2, 3, 4]
    assert min(start for f, _, start, _ in h.step_log() if f == "f4") == 11.0


def test_fifo_frames_run_every_frame_up_to_the_queue_bound():
    h = harness(frames={"name": "fifo", "max_queued": 2})
    h.submit("f1")
    for t, name in [(0.5, "f2"), (0.6, "f3"), (0.7, "f4")]:
        h.submit_at(t, name)
    h.run()
    assert h.reason("f2") == "superseded"  # the oldest waiting frame makes room
    assert [e[1] for e in h.events if e[0] == "end"] == ["f2", "f1", "f3", "f4"]
    assert all(h.exits(f) == [1, 2, 3, 4] for f in ("f1", "f3", "f4"))


def test_a_late_frame_with_an_older_stamp_does_not_replace_a_newer_waiting_one():
    h = harness(frames="newest_wins")
    h.submit("running")
    h.submit("newer", stamp=0.0)
    h.submit("late", stamp=-1.0)  # arrives last, captured earlier
    h.run()
    assert h.reason("late") == "superseded"
    assert h.exits("newer") == [1, 2, 3, 4]


# ----- deadlines ----------------------------------------------------------------------------------------------
def test_stop_at_deadline_between_steps():
    h = harness(deadline="deadline", sources={"cam": SourceConfig(budget=6.0)})
    h.submit("f1")
    h.run()
    assert h.exits("f1") == [1, 2]
    assert h.steps_run("f1") == ALL_STEPS[:5]  # module3 (5..7) was started before the deadline, exit3 not
    assert not h.results_of("f1")[-1].is_final  # at exit 2 (t=5) the deadline had not passed
    end = h.end("f1")
    assert end.reason == "deadline" and end.exits_delivered == 2 and end.deadline == 6.0
    s = h.scheduler.stats().sources["cam"]
    assert (s.exit_deadline_hits, s.exit_deadline_misses, s.job_deadline_hits, s.job_deadline_misses) == (2, 0, 1, 0)
    assert s.completed == 1 and s.ended_by_reason == {"deadline": 1}


def test_deadline_reached_exactly_at_an_exit_makes_that_exit_final():
    h = harness(deadline="deadline", sources={"cam": SourceConfig(budget=5.0)})
    h.submit("f1")
    h.run()
    last = h.results_of("f1")[-1]
    assert last.exit_index == 2 and last.is_final and last.final_reason == "deadline" and last.deadline_met


def test_a_job_whose_deadline_passes_in_the_queue_expires_without_running():
    h = harness(frames="fifo", deadline="deadline", sources={"cam": SourceConfig(budget=3.0)})
    h.submit("f1")
    h.submit_at(0.5, "f2")
    h.run()
    assert h.reason("f1") == "deadline" and h.exits("f1") == [1]
    assert h.reason("f2") == "expired" and h.steps_run("f2") == []
    assert math.isnan(h.end("f2").timings.queue_wait)
    s = h.scheduler.stats().sources["cam"]
    assert s.dropped == 1 and s.job_deadline_misses == 1 and s.job_deadline_hits == 1


@pytest.mark.parametrize("policy, steps, reason", [
    ("predictive", ALL_STEPS[:4], "predicted_miss"),
    ("deadline", ALL_STEPS[:5], "deadline"),
])
def test_predictive_does_not_start_an_exit_that_would_finish_too_late(policy, steps, reason):
    h = harness(deadline=policy)
    h.submit("warmup")  # no deadline: teaches the latency model every step's time
    h.run()
    h.submit("f2", deadline=h.clock.now() + 7.0)  # exits at +2, +5; exit3 would finish at +8
    h.run()
    assert h.exits("f2") == [1, 2]
    assert h.steps_run("f2") == steps
    assert h.reason("f2") == reason
    assert h.results_of("f2")[-1].is_final == (policy == "predictive")


def test_predictive_scales_the_prediction_with_the_computed_fraction():
    # The warm-up frame computes everything; f2 computes half of every masked step after exit 1, so its exit 2
    # (module2 + exit2: 3 s at full cost) takes 1.5 s and fits before the deadline, exit 3 does not.
    h = SchedulerHarness(policies=Policies.from_config({"deadline": "predictive", "suspend": "drop"}),
                        fractions=lambda exit_index, state: 1.0 if state.meta["job_id"] == 1 else 0.5)
    h.submit("warmup")
    h.run()
    t0 = h.clock.now()
    h.submit("f2", deadline=t0 + 4.0)
    h.run()
    assert h.exits("f2") == [1, 2]
    assert h.results_of("f2")[1].timings.end_to_end == pytest.approx(3.5)
    assert h.results_of("f2")[-1].final_reason == "predicted_miss"


def test_predictive_expires_a_frame_whose_first_exit_cannot_make_it():
    h = harness(deadline="predictive", frames="fifo")
    h.submit("warmup")
    h.run()
    now = h.clock.now()
    h.submit("hopeless", deadline=now + 1.5)  # stem + exit1 take 2
    h.submit("tight", deadline=now + 2.5)
    h.run()
    assert h.reason("hopeless") == "expired" and h.steps_run("hopeless") == []
    assert h.exits("tight") == [1] and h.results_of("tight")[0].final_reason == "predicted_miss"


def test_predictive_with_a_safety_factor_stops_earlier():
    h = harness(deadline={"name": "predictive", "safety_factor": 1.5})
    h.submit("warmup")
    h.run()
    h.submit("f2", deadline=h.clock.now() + 5.5)  # exit2 at +5 fits, but 2 + 1.5 * 3 = 6.5 > 5.5
    h.run()
    assert h.exits("f2") == [1] and h.reason("f2") == "predicted_miss"


# ----- priorities ---------------------------------------------------------------------------------------------
def test_higher_priority_preempts_within_one_step():
    h = harness(sources={"rear": SourceConfig(priority=0), "front": SourceConfig(priority=5)})
    h.submit("low", source="rear")
    h.submit_at(2.5, "high", source="front")  # during low's module2 (2..4)
    h.run()
    assert h.steps_run("low") == ["stem", "exit1", "module2"]
    assert h.reason("low") == "preempted" and h.exits("low") == [1]
    assert not h.results_of("low")[0].is_final  # the preemption came after the exit
    assert min(start for f, _, start, _ in h.step_log() if f == "high") == 4.0
    assert h.scheduler.stats().preemption_reaction.max == pytest.approx(1.5)
    assert h.exits("high") == [1, 2, 3, 4]


def test_job_priority_overrides_the_source_priority():
    h = harness()
    h.submit("normal", source="a")
    h.submit_at(0.5, "event", source="b", priority=3)
    h.run()
    assert h.steps_run("normal") == ["stem"] and h.reason("normal") == "preempted"
    assert h.exits("event") == [1, 2, 3, 4]


def test_equal_priorities_run_earliest_deadline_first_without_preempting():
    h = harness()
    h.submit("x", source="a")
    h.submit_at(0.5, "y", source="b", deadline=40.0)
    h.submit_at(0.6, "z", source="c", deadline=30.0)
    h.run()
    assert [e[1] for e in h.events if e[0] == "end"] == ["x", "z", "y"]
    assert all(h.reason(f) == "last_exit" for f in "xyz")


def test_a_waiting_higher_priority_job_runs_before_an_earlier_one():
    h = harness(priority={"name": "priority_edf", "preempt": False})
    h.submit("running", source="a")
    h.submit_at(0.5, "early", source="b")
    h.submit_at(0.6, "important", source="c", priority=1)
    h.run()
    assert h.reason("running") == "last_exit"  # preempt=False: nothing is stopped
    assert [e[1] for e in h.events if e[0] == "end"] == ["running", "important", "early"]


def test_fifo_priority_ignores_priorities():
    h = harness(priority="fifo")
    h.submit("first", source="a")
    h.submit_at(0.5, "second", source="b", priority=9)
    h.submit_at(0.6, "third", source="c", priority=10)
    h.run()
    assert [e[1] for e in h.events if e[0] == "end"] == ["first", "second", "third"]


# ----- suspend and resume -------------------------------------------------------------------------------------
def suspending(max_suspended: int = 2, max_age: float = 100.0, **kinds) -> SchedulerHarness:
    return harness(suspend={"name": "suspend", "max_suspended": max_suspended, "max_age": max_age}, **kinds)


def test_a_suspended_job_resumes_where_it_stopped():
    h = suspending()
    h.submit("low", source="rear")
    h.submit_at(3.0, "high", source="front", priority=1)
    h.run()
    assert h.exits("low") == [1, 2, 3, 4] and h.reason("low") == "last_exit"
    assert h.steps_run("low") == ALL_STEPS  # each step once: resumed, not recomputed
    low_log = [(s, start) for f, s, start, _ in h.step_log() if f == "low"]
    assert low_log[3] == ("exit2", 15.0)  # after high's 11 s
    assert h.events[:2] == [("result", "low", 1), ("result", "high", 1)]
    assert h.results_of("low")[1].timings.model_time == 3.0  # module2 before, exit2 after the suspension
    end = h.end("low")
    assert end.suspensions == 1 and end.timings.model_time == 11.0
    s = h.scheduler.stats().sources["rear"]
    assert (s.suspensions, s.resumes) == (1, 1)


def test_a_suspended_job_older_than_max_age_is_dropped_as_stale():
    h = suspending(max_age=5.0)
    h.submit("low", source="rear")
    h.submit_at(3.0, "high", source="front", priority=1)
    h.run()
    assert h.reason("low") == "stale" and h.exits("low") == [1]
    assert h.steps_run("low") == ALL_STEPS[:3]
    s = h.scheduler.stats().sources["rear"]
    assert s.dropped == 1 and s.ended_by_reason == {"stale": 1} and s.resumes == 0


def test_the_suspend_count_bound_evicts_the_least_important():
    h = suspending(max_suspended=1)
    h.submit("low", source="a")
    h.submit_at(0.5, "mid", source="b", priority=1)
    h.submit_at(4.5, "high", source="c", priority=2)
    h.run()
    assert h.reason("low") == "evicted" and h.steps_run("low") == ["stem"]
    assert h.reason("mid") == "last_exit" and h.steps_run("mid") == ALL_STEPS
    assert h.end("mid").suspensions == 1
    assert [e[1] for e in h.events if e[0] == "end"] == ["low", "high", "mid"]


def test_a_suspended_job_is_superseded_by_a_newer_frame_of_its_source():
    h = suspending(frames="newest_wins")
    h.submit("r1", source="rear")
    h.submit_at(3.0, "high", source="front", priority=1)
    h.submit_at(6.0, "r2", source="rear")  # while high runs; r1 has its exit 1 already
    h.run()
    assert h.reason("r1") == "preempted" and h.exits("r1") == [1]
    assert h.steps_run("r1") == ALL_STEPS[:3]
    assert h.exits("r2") == [1, 2, 3, 4]


def test_a_suspended_job_without_its_first_exit_resumes_before_the_newer_frame_takes_over():
    h = suspending(frames="newest_wins")
    h.submit("r1", source="rear")
    h.submit_at(0.5, "high", source="front", priority=1)  # r1 suspended after its stem, no exit yet
    h.submit_at(2.0, "r2", source="rear")
    h.run()
    assert h.steps_run("r1") == ["stem", "exit1"]  # resumed for its first exit, stem not recomputed
    (r,) = h.results_of("r1")
    assert r.is_final and r.final_reason == "preempted"
    assert h.exits("r2") == [1, 2, 3, 4]


def test_the_drop_policy_discards_preempted_work():
    h = harness(suspend="drop")
    h.submit("low", source="rear")
    h.submit_at(3.0, "high", source="front", priority=1)
    h.run()
    assert h.reason("low") == "preempted" and h.steps_run("low") == ALL_STEPS[:3]

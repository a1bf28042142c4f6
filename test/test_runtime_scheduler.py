"""The scheduler's contract: accounting that always adds up, result and end delivery, timings, cancellation,
threads, failures, and the latency model. Scripted model and fake clock throughout (see test_runtime_policies)."""
import math
import random
import threading

import pytest
import torch

from anytime_perception.runtime import (AnytimeScheduler, FakeClock, Job, LatencyModel, Policies, SourceConfig,
                                        make_policy)
from anytime_perception.runtime.testing import DEFAULT_STEPS, SchedulerHarness, ScriptedModel

ALL_STEPS = [name for name, _ in DEFAULT_STEPS]

POLICY_MIXES = {
    "newest+predictive+suspend": {"frames": "newest_wins", "deadline": "predictive",
                                  "suspend": {"name": "suspend", "max_suspended": 2, "max_age": 30.0}},
    "newest0+deadline+drop": {"frames": {"name": "newest_wins", "min_exits_before_preempt": 0},
                              "deadline": "deadline", "suspend": "drop"},
    "latest+predictive+suspend1": {"frames": "finish_then_latest", "deadline": "predictive",
                                   "suspend": {"name": "suspend", "max_suspended": 1, "max_age": 12.0}},
    "fifo+none+edf-nopreempt": {"frames": {"name": "fifo", "max_queued": 3}, "deadline": "none",
                                "priority": {"name": "priority_edf", "preempt": False}},
    "newest+deadline+fifo-priority": {"frames": "newest_wins", "deadline": "deadline", "priority": "fifo"},
}


@pytest.mark.parametrize("mix", list(POLICY_MIXES))
def test_accounting_adds_up_at_every_step_under_random_traffic(mix):
    rng = random.Random(sum(map(ord, mix)))
    sources = {"front": SourceConfig(priority=1, budget=9.0), "rear": SourceConfig(budget=14.0),
               "side": SourceConfig(budget=None)}
    h = SchedulerHarness(policies=Policies.from_config(POLICY_MIXES[mix]), sources=sources,
                        fractions=lambda i, state: rng.choice([0.25, 0.5, 1.0]))
    t = 0.0
    for n in range(80):
        t += rng.expovariate(1 / 2.5)
        source = rng.choice(list(sources))
        extra = {"priority": 5} if rng.random() < 0.1 else {}
        h.submit_at(t, f"{source}{n}", source=source, **extra)
        if rng.random() < 0.1:  # cancel an earlier frame, whatever state it is in by then
            victim = f"{source}{max(0, n - rng.randint(0, 3))}"
            h.clock.call_at(t + rng.random() * 3, lambda v=victim: h.scheduler.cancel(h.ids[v]) if v in h.ids else None)

    snapshots = 0
    while h.scheduler.run_once() or h.clock.next_event is not None:
        if not h.scheduler.in_flight and h.clock.next_event is not None:  # idle: let the next arrival happen
            h.clock.advance_to(h.clock.next_event)
        stats = h.scheduler.stats()
        assert stats.balanced, stats.as_dict()
        total = stats.total
        assert total.in_flight == h.scheduler.in_flight
        assert total.received == total.completed + total.preempted + total.dropped + total.in_flight
        snapshots += 1
    assert snapshots > 100

    stats = h.scheduler.stats()
    total = stats.total
    assert total.received == 80 and total.in_flight == 0 and len(h.ends) == 80
    assert sorted(e.job_id for e in h.ends) == sorted(h.ids.values())  # exactly one end per job
    assert total.completed and (total.preempted or total.dropped)  # the traffic exercised more than one path
    for source, s in stats.sources.items():
        ends = [e for e in h.ends if e.job.source == source]
        counted = {}
        for e in ends:
            counted[str(e.reason)] = counted.get(str(e.reason), 0) + 1
        assert s.ended_by_reason == counted
        assert s.received == len(ends)
        assert sum(s.exits_delivered.values()) == len([r for r in h.results if r.job.source == source])
    for end in h.ends:
        results = [r for r in h.results if r.job_id == end.job_id]
        assert [r.exit_index for r in results] == list(range(1, len(results) + 1))
        assert end.exits_delivered == len(results)
        finals = [r for r in results if r.is_final]
        assert len(finals) <= 1 and (not finals or finals[0] is results[-1])
        if finals:
            assert finals[0].final_reason == end.reason
        position = h.events.index(("end", end.job.frame_id, str(end.reason)))
        assert all(h.events.index(("result", end.job.frame_id, r.exit_index)) < position for r in results)
    with_deadline = [r for r in h.results if r.deadline is not None]
    assert total.exit_deadline_hits + total.exit_deadline_misses == len(with_deadline)
    assert total.exit_deadline_hits == sum(r.deadline_met for r in with_deadline)


def test_timings_of_results_and_ends():
    h = SchedulerHarness(policies=Policies.from_config({"frames": "fifo", "deadline": "none"}))
    h.submit("f1", stamp=-0.5)  # captured half a second before it was submitted
    h.submit("f2")
    h.run()
    f1 = h.results_of("f1")
    assert [r.timings.model_time for r in f1] == [2.0, 3.0, 3.0, 3.0]
    assert [r.timings.job_model_time for r in f1] == [2.0, 5.0, 8.0, 11.0]
    assert [r.timings.end_to_end for r in f1] == [2.5, 5.5, 8.5, 11.5]
    assert [r.timings.since_submit for r in f1] == [2.0, 5.0, 8.0, 11.0]
    assert all(r.timings.queue_wait == 0.0 for r in f1)
    f2 = h.results_of("f2")
    assert f2[0].timings.queue_wait == 11.0 and f2[0].timings.end_to_end == 13.0
    end = h.end("f2")
    assert end.timings.model_time == 11.0 and end.timings.end_to_end == 22.0 and end.category == "completed"
    assert end.timings.job_model_time == 11.0
    assert [float(r.exit.logits.flatten()[0]) for r in f1] == [1.0, 2.0, 3.0, 4.0]  # the frame's own outputs


def test_stats_histograms_and_snapshot_isolation():
    h = SchedulerHarness(policies=Policies.from_config({"deadline": "none"}),
                        sources={"cam": SourceConfig(budget=6.0)})
    h.submit("f1")
    h.run()
    stats = h.scheduler.stats()
    s = stats.sources["cam"]
    assert {k: v.count for k, v in s.latency.items()} == {1: 1, 2: 1, 3: 1, 4: 1}
    assert s.latency[3].max == 8.0 and s.latency[3].quantile(0.5) == 8.0
    assert (s.exit_deadline_hits, s.exit_deadline_misses, s.job_deadline_hits) == (2, 2, 1)
    assert s.exits_per_job == {4: 1}
    assert stats.steps == 8 and stats.model_time == 11.0
    assert stats.step_time["module2"].count == 1 and stats.step_time["module2"].total == 2.0
    assert stats.policies["frames"] == {"name": "newest_wins", "min_exits_before_preempt": 1}
    h.submit("f2")
    h.run()
    assert stats.sources["cam"].received == 1 and h.scheduler.stats().sources["cam"].received == 2
    d = h.scheduler.stats().as_dict()
    assert d["balanced"] and d["total"]["completed"] == 2 and d["sources"]["cam"]["in_flight"] == 0


def test_cancel_waiting_running_and_suspended_jobs():
    h = SchedulerHarness(policies=Policies.from_config({"frames": "fifo", "deadline": "none",
                                                       "suspend": {"name": "suspend", "max_age": 100.0}}))
    h.submit("running", source="a")
    h.submit("queued", source="a")
    assert h.scheduler.cancel(h.ids["queued"]) and not h.scheduler.cancel(h.ids["queued"])
    h.clock.call_at(3.0, lambda: h.scheduler.cancel(h.ids["running"]))  # during module2
    h.run()
    assert h.reason("queued") == "cancelled" and h.steps_run("queued") == []
    assert h.reason("running") == "cancelled" and h.steps_run("running") == ALL_STEPS[:3]
    assert h.exits("running") == [1] and not h.results_of("running")[0].is_final

    h.submit("low", source="b")
    h.submit_at(h.clock.now() + 0.5, "high", source="c", priority=1)
    h.clock.call_at(h.clock.now() + 2.0, lambda: h.scheduler.cancel(h.ids["low"]))  # low is suspended by then
    h.run()
    assert h.reason("low") == "cancelled" and h.steps_run("low") == ["stem"]
    assert h.reason("high") == "last_exit"
    assert h.scheduler.stats().total.ended_by_reason == {"cancelled": 3, "last_exit": 1}
    assert not h.scheduler.cancel(12345)


def test_stop_ends_everything_in_flight_with_shutdown():
    h = SchedulerHarness(policies=Policies.from_config({"frames": "fifo", "deadline": "none"}))
    h.submit("f1")
    h.submit("f2")
    for _ in range(3):
        h.scheduler.run_once()
    h.scheduler.stop()
    assert h.reason("f1") == "shutdown" and h.exits("f1") == [1] and h.reason("f2") == "shutdown"
    stats = h.scheduler.stats()
    assert stats.balanced and stats.total.dropped == 2 and stats.total.in_flight == 0


def test_threaded_worker_delivers_on_its_own_thread():
    clock = FakeClock()
    model = ScriptedModel(clock)
    threads, ends = set(), []

    def on_end(end):
        threads.add(threading.current_thread().name)
        ends.append(end)

    scheduler = AnytimeScheduler(model, clock=clock, policies=Policies.from_config({"deadline": "none"}),
                               on_result=lambda r: threads.add(threading.current_thread().name), on_end=on_end,
                               name="test-worker")
    with scheduler:
        last = {}
        for n in range(12):
            source = ("a", "b")[n % 2]
            last[source] = scheduler.submit(Job(torch.zeros(3, 2, 2), stamp=clock.now(), source=source))
        assert scheduler.wait_idle(timeout=30)
    assert threads == {"test-worker"}
    assert len(ends) == 12
    by_id = {e.job_id: e for e in ends}
    assert all(by_id[i].reason == "last_exit" for i in last.values())  # nothing newer came for the last frames
    stats = scheduler.stats()
    assert stats.balanced and stats.total.received == 12 and stats.total.in_flight == 0
    scheduler.start()  # restartable, and then not usable synchronously
    with pytest.raises(RuntimeError, match="worker thread is running"):
        scheduler.run_once()
    scheduler.stop()


def test_stop_from_a_callback_stops_the_worker_after_the_callback():
    clock = FakeClock()
    ends = []
    scheduler = AnytimeScheduler(ScriptedModel(clock), clock=clock, policies=Policies.from_config({"deadline": "none"}),
                               on_end=ends.append)
    scheduler.on_result = lambda r: scheduler.stop()
    scheduler.start()
    scheduler.submit(Job(torch.zeros(3, 2, 2), stamp=0.0))
    assert scheduler.wait_idle(timeout=30)
    assert [str(e.reason) for e in ends] == ["shutdown"] and ends[0].exits_delivered == 1
    scheduler.start()  # startable again
    scheduler.stop()


def test_a_failing_step_ends_only_its_job_and_a_failing_callback_is_survived(caplog):
    h = SchedulerHarness(policies=Policies.from_config({"frames": "fifo", "deadline": "none"}))
    original = h.model.advance

    def advance(state):
        if state.meta["job_id"] == h.ids["bad"] and state.next_step == 2:
            raise RuntimeError("out of memory (scripted)")
        return original(state)

    h.model.advance = advance
    h.scheduler.on_result = lambda r: (_ for _ in ()).throw(ValueError("subscriber bug"))
    h.submit("bad")
    h.submit("good")
    h.run()
    assert h.reason("bad") == "failed" and h.reason("good") == "last_exit"
    assert "out of memory (scripted)" in caplog.text and "subscriber bug" in caplog.text
    assert h.scheduler.stats().total.dropped == 1


def test_the_device_is_synchronised_after_every_step():
    clock = FakeClock()
    calls = []
    scheduler = AnytimeScheduler(ScriptedModel(clock), clock=clock, synchronize=lambda: calls.append(clock.now()))
    scheduler.submit(Job(torch.zeros(1, 3, 2, 2), stamp=0.0))
    assert scheduler.run_until_idle() == 8
    assert calls == [1.0, 2.0, 4.0, 5.0, 7.0, 8.0, 10.0, 11.0]


def test_submit_and_policy_validation():
    scheduler = AnytimeScheduler(ScriptedModel(FakeClock()), clock=FakeClock())
    with pytest.raises(ValueError, match="tensor"):
        scheduler.submit(Job(torch.zeros(2, 2), stamp=0.0))
    with pytest.raises(ValueError, match="choose one of: newest_wins, finish_then_latest, fifo"):
        Policies.from_config({"frames": "latest"})
    with pytest.raises(ValueError, match="takes: min_exits_before_preempt"):
        make_policy("frames", "newest_wins", min_exits=2)
    with pytest.raises(ValueError, match="kinds"):
        Policies.from_config({"deadlines": "none"})
    with pytest.raises(ValueError, match="max_age"):
        make_policy("suspend", "suspend", max_age=0)
    with pytest.raises(ValueError, match="needs a 'name'"):
        Policies.from_config({"suspend": {"max_age": 1.0}})
    with pytest.raises(ValueError, match="budget"):
        SourceConfig(budget=-1.0)
    policies = Policies.from_config({"frames": {"name": "newest_wins", "min_exits_before_preempt": 2},
                                     "priority": "fifo"})
    assert Policies.from_config(policies.describe()).describe() == policies.describe()
    assert policies.describe()["priority"] == {"name": "fifo"}


def test_policies_can_change_while_running():
    h = SchedulerHarness(policies=Policies.from_config({"frames": "finish_then_latest", "deadline": "none"}))
    h.submit("f1")
    h.submit_at(0.5, "f2")
    h.clock.call_at(3.0, lambda: h.scheduler.set_policies(Policies.from_config({"frames": "newest_wins"})))
    h.run()
    assert h.steps_run("f1") == ALL_STEPS[:3] and h.reason("f1") == "preempted"
    assert h.scheduler.stats().policies["frames"]["name"] == "newest_wins"


def test_source_configuration_applies_to_later_jobs():
    h = SchedulerHarness()
    h.scheduler.configure_source("cam", SourceConfig(priority=2, budget=0.5))
    h.submit("f1", source="cam", stamp=10.0)
    assert h.scheduler.source_config("cam").priority == 2
    h.run()
    assert h.end("f1").priority == 2 and h.end("f1").deadline == 10.5


# ----- latency model ------------------------------------------------------------------------------------------
def test_latency_model_fits_fixed_plus_proportional_cost():
    model = LatencyModel(decay=0.1)
    rng = random.Random(0)
    total_work = total_time = 0.0
    for _ in range(200):
        work = rng.uniform(1.0, 4.0)
        model.observe(3, work, 0.5 + 2.0 * work)
        total_work, total_time = total_work + work, total_time + 0.5 + 2.0 * work
    assert model.predict(3, 2.5) == pytest.approx(5.5, rel=1e-6)
    assert model.predict(3, 1.0) == pytest.approx(2.5, rel=1e-6)
    assert model.predict(7, 2.0) == pytest.approx(2.0 * total_time / total_work)  # never measured: average rate
    assert LatencyModel().predict(0, 5.0) == 0.0 and LatencyModel().typical(0) == 0.0


def test_latency_model_follows_a_slowdown():
    model = LatencyModel(decay=0.1)
    for _ in range(50):
        model.observe(0, 1.0, 1.0)
    for _ in range(40):
        model.observe(0, 1.0, 2.0)
    assert model.predict(0, 1.0) == pytest.approx(2.0, rel=0.03)
    assert model.predict(0, 0.5) == pytest.approx(1.0, rel=0.03)  # no spread in work: proportional


def test_fake_clock_runs_events_in_time_order_during_an_advance():
    clock, seen = FakeClock(), []
    clock.call_at(2.0, lambda: seen.append(("b", clock.now())))
    clock.call_at(1.0, lambda: seen.append(("a", clock.now())))
    clock.advance(1.5)
    assert seen == [("a", 1.0)] and clock.now() == 1.5
    clock.advance(10)
    assert seen == [("a", 1.0), ("b", 2.0)] and math.isclose(clock.now(), 11.5)
    with pytest.raises(ValueError):
        clock.advance(-1)

"""The anytime runtime: deadlines, preemption, priorities and resumable jobs over the staged model (no ROS here).

    scheduler = AnytimeScheduler(model, policies=Policies.from_config({"deadline": "predictive"}),
                                 sources={"front": SourceConfig(priority=1, budget=0.1)}, on_result=publish)
    scheduler.start()
    scheduler.submit(Job(images, stamp=t, frame_id="cam_front", source="front"))

`model` is any `StagedModel` (protocol.py): `AnytimeHRNet`, or the test doubles of `runtime.testing`.
"""
from .clock import Clock, FakeClock, SystemClock
from .jobs import CATEGORIES, EndReason, Job, JobEnd, JobResult, SourceConfig, Timings
from .latency import LatencyModel
from .policies import (REGISTRY as POLICY_REGISTRY, ArrivalOrder, DeadlinePolicy, DropPreempted, FinishThenLatest,
                       FramePolicy, IgnoreDeadlines, KeepAllFrames, NewestFrameWins, Policies, PredictiveDeadline,
                       PriorityPolicy, PriorityThenEDF, StopAtDeadline, SuspendPolicy, SuspendResume, make_policy)
from .protocol import StagedModel
from .scheduler import AnytimeScheduler
from .stats import Histogram, RuntimeStats, SourceStats

__all__ = [
    "AnytimeScheduler", "StagedModel", "Job", "JobResult", "JobEnd", "EndReason", "SourceConfig", "Timings",
    "CATEGORIES", "Clock", "SystemClock", "FakeClock", "LatencyModel",
    "Policies", "make_policy", "POLICY_REGISTRY", "FramePolicy", "DeadlinePolicy", "PriorityPolicy", "SuspendPolicy",
    "NewestFrameWins", "FinishThenLatest", "KeepAllFrames", "IgnoreDeadlines", "StopAtDeadline",
    "PredictiveDeadline", "PriorityThenEDF", "ArrivalOrder", "DropPreempted", "SuspendResume",
    "RuntimeStats", "SourceStats", "Histogram",
]

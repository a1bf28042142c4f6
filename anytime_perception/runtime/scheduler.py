"""The anytime scheduler: one worker per device turns submitted frames into a stream of exit results.

The worker runs one model step at a time (stem, layer1, a transition, one HRNet module or an exit head) and asks
the policies before every step whether the running job goes on, so a newer frame, a higher-priority job, a
cancellation or a deadline takes effect within one step. Results go out through `on_result` the moment an exit is
computed; every job ends with exactly one `on_end`.

Threads: `submit`, `cancel`, `configure_source`, `set_policies` and `stats` may be called from any thread. The
model runs outside the lock, so submitting never waits for a step. Callbacks run on the worker thread (or on the
thread calling `run_once` / `stop`), never under the lock, so they may call back into the scheduler.

Timing on CUDA: the worker synchronises the device after every step (`torch.cuda.synchronize`). Deciding between
steps needs the step to have *finished* (a deadline check against kernels still queued would be meaningless), and
the model already copies each mask's computed fraction to the host at masked steps and exits, so most steps
synchronise anyway. The cost is that the device idles while Python launches the next step's first kernels, once
per step (tens of microseconds per step, 15 steps per frame for W18-Small). On CPU there is nothing to synchronise.
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .clock import Clock, SystemClock
from .jobs import EndReason, Job, JobEnd, JobRecord, JobResult, SourceConfig, Timings
from .latency import LatencyModel
from .policies import Policies
from .protocol import StagedModel
from .stats import Histogram, RuntimeStats, SourceStats
from .work import StepWork

log = logging.getLogger(__name__)

ResultCallback = Callable[[JobResult], Any]
EndCallback = Callable[[JobEnd], Any]


def _model_device(model: StagedModel) -> torch.device:
    if hasattr(model, "parameters"):
        first = next(iter(model.parameters()), None)
        if first is not None:
            return first.device
    return torch.device(getattr(model, "device", "cpu"))


def _synchronizer(device: torch.device) -> Callable[[], None] | None:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


class AnytimeScheduler:
    """Runs jobs on a staged anytime model under the given policies.

    `model`: a `runtime.protocol.StagedModel` (an `AnytimeHRNet`, or a test double such as
    `runtime.testing.ScriptedModel`), already on its device and in eval mode.
    `sources`: per-source priority and budget; unknown sources use `default_source`.
    `synchronize`: called after every step to wait for the device; defaults to CUDA synchronisation on CUDA.

    Threaded: `start()` ... `submit(job)` ... `stop()`. Synchronous (tests, offline): never start; call `run_once()`
    (one model step) or `run_until_idle()` on your own thread.
    """

    def __init__(self, model: StagedModel, *, policies: Policies | None = None, clock: Clock | None = None,
                 on_result: ResultCallback | None = None, on_end: EndCallback | None = None,
                 sources: Mapping[str, SourceConfig] | None = None, default_source: SourceConfig | None = None,
                 device: str | torch.device | None = None, latency_model: LatencyModel | None = None,
                 synchronize: Callable[[], None] | None = None, name: str = "anytime-scheduler"):
        self.model = model
        self.clock: Clock = clock or SystemClock()
        self.on_result = on_result
        self.on_end = on_end
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.latency = latency_model or LatencyModel()
        self.name = name
        self._synchronize = synchronize if synchronize is not None else _synchronizer(self.device)
        self._step_work = StepWork(model)
        self._step_names = [s.name for s in model.steps]
        exit_steps = [i for i, s in enumerate(model.steps) if s.kind == "exit"]
        if not exit_steps or exit_steps[-1] != len(model.steps) - 1:
            raise ValueError("the model's last step must be an exit")
        # for every step, the index of the exit step that ends its stretch
        self._next_exit = [next(e for e in exit_steps if e >= i) for i in range(len(model.steps))]

        self._cond = threading.Condition(threading.RLock())
        self._policies = policies or Policies()
        self._sources: dict[str, SourceConfig] = dict(sources or {})
        self._default_source = default_source or SourceConfig()
        self._ids = itertools.count(1)
        self._live: dict[int, JobRecord] = {}  # every job not yet ended
        self._queued: dict[str, list[JobRecord]] = {}
        self._suspended: list[JobRecord] = []
        self._running: JobRecord | None = None
        self._notes: list[JobResult | JobEnd] = []  # waiting to be delivered, in order
        self._stats = RuntimeStats(policies=self._policies.describe())
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._worker_idle = True

    # ----- configuration ------------------------------------------------------------------------------------------
    @property
    def policies(self) -> Policies:
        return self._policies

    def set_policies(self, policies: Policies) -> None:
        """Takes effect at the next step; queued jobs beyond the new queue depth go at their source's next submit."""
        with self._cond:
            self._policies = policies
            self._stats.policies = policies.describe()
            self._cond.notify_all()

    def configure_source(self, source: str, config: SourceConfig) -> None:
        """Priority and budget for jobs of `source` submitted from now on."""
        with self._cond:
            self._sources[source] = config

    def source_config(self, source: str) -> SourceConfig:
        with self._cond:
            return self._sources.get(source, self._default_source)

    # ----- jobs ---------------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue a frame; returns its job id. Never blocks on the model."""
        if not isinstance(job.images, torch.Tensor) or job.images.dim() not in (3, 4):
            shape = tuple(job.images.shape) if isinstance(job.images, torch.Tensor) else type(job.images).__name__
            raise ValueError(f"job images must be a (3, H, W) or (B, 3, H, W) tensor, got {shape}")
        with self._cond:
            config = self._sources.get(job.source, self._default_source)
            priority = job.priority if job.priority is not None else config.priority
            deadline = job.deadline
            if deadline is None and config.budget is not None:
                deadline = job.stamp + config.budget
            record = JobRecord(next(self._ids), job, priority, deadline, self.clock.monotonic())
            self._live[record.id] = record
            self._source_stats(job.source).received += 1
            queue = self._queued.setdefault(job.source, [])
            queue.append(record)
            depth = self._policies.frames.queue_depth
            if len(queue) > depth:
                for old in sorted(queue, key=JobRecord.recency)[:-depth]:
                    self._end(old, EndReason.SUPERSEDED)
            self._cond.notify_all()
            return record.id

    def cancel(self, job_id: int) -> bool:
        """End a job (`cancelled`): at once if waiting, before its next step if running. False if already ended."""
        with self._cond:
            record = self._live.get(job_id)
            if record is None:
                return False
            if record.status == "running":
                record.cancel_requested = True
            else:
                self._end(record, EndReason.CANCELLED)
            self._cond.notify_all()
            return True

    def stats(self) -> RuntimeStats:
        """A consistent snapshot (a copy: it does not change afterwards)."""
        with self._cond:
            snapshot = copy.deepcopy(self._stats)
            for record in self._live.values():
                s = snapshot.sources.setdefault(record.source, SourceStats())
                setattr(s, record.status, getattr(s, record.status) + 1)
            return snapshot

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._live)

    # ----- running ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("the scheduler is already running")
            self._stop_requested = False
            self._worker_idle = False
            self._thread = threading.Thread(target=self._run_worker, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop the worker after its current step; jobs still in flight end with `shutdown`. With `drain`, first
        wait (up to `timeout` seconds) until every job has ended on its own. Can be started again."""
        thread = self._thread
        if thread is threading.current_thread():  # from a callback: the worker stops after returning from it
            with self._cond:
                self._stop_requested = True
            return
        if drain and thread is not None:
            self.wait_idle(timeout)
        with self._cond:
            self._stop_requested = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: worker still in a step after %.3gs; it stops after that step", self.name, timeout)
                return
        else:
            self._shutdown_all()
        with self._cond:
            self._thread = None
            self._stop_requested = False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has ended and its callbacks ran (threaded mode). False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._live and not self._notes and self._worker_idle, timeout)

    def __enter__(self) -> AnytimeScheduler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def run_once(self) -> bool:
        """Synchronous mode: do the next piece of work (at most one model step, plus any scheduling decisions and
        callbacks) on this thread. Returns False when there was nothing to do."""
        if self._thread is not None:
            raise RuntimeError("the worker thread is running; run_once is for an scheduler that was not started")
        with torch.inference_mode():
            return self._iterate()

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Synchronous mode: run until every job has ended; returns the number of model steps run."""
        steps_before = self._stats.steps
        for _ in range(max_steps + 1):
            if not self.run_once():
                return self._stats.steps - steps_before
        raise RuntimeError(f"still busy after {max_steps} iterations")

    # ----- the worker -----------------------------------------------------------------------------------------
    def _run_worker(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not self._stop_requested and not self._has_work():
                            self._worker_idle = True
                            self._cond.notify_all()
                            self._cond.wait()
                        self._worker_idle = False
                        if self._stop_requested:
                            break
                    try:
                        self._iterate()
                    except Exception:  # a policy or bookkeeping bug must not kill the worker silently
                        log.exception("%s: scheduling failed", self.name)
                        with self._cond:
                            if self._running is not None:
                                self._end(self._running, EndReason.FAILED)
        finally:
            self._shutdown_all()
            with self._cond:
                if self._thread is threading.current_thread():  # startable again, whoever asked it to stop
                    self._thread = None
                    self._stop_requested = False
                self._worker_idle = True
                self._cond.notify_all()

    def _has_work(self) -> bool:
        return bool(self._live or self._notes)

    def _iterate(self) -> bool:
        clock = self.clock
        began = clock.monotonic()
        with self._cond:
            job = self._choose_job()
            notes = self._take_notes()
        callback_time = self._deliver(notes)
        if job is None:
            return bool(notes)

        if job.state is not None:
            self._refresh_work(job)
        step_began = clock.monotonic()
        step_index, result, error, not_model_time = job.state.next_step if job.state is not None else 0, None, None, 0.0
        try:
            if job.state is None:  # the first step also moves the frame to the device
                images = job.job.images if job.job.images.dim() == 4 else job.job.images.unsqueeze(0)
                state = self.model.begin(images.to(self.device, non_blocking=True))
                state.meta["job_id"] = job.id
                job.state = state
                refresh_began = clock.monotonic()
                self._refresh_work(job)
                not_model_time = clock.monotonic() - refresh_began
            result = self.model.advance(job.state)
            if self._synchronize is not None:
                self._synchronize()
        except Exception as e:  # noqa: BLE001 - reported through the job's end and the log
            error = e
        seconds = clock.monotonic() - step_began - not_model_time

        with self._cond:
            self._after_step(job, step_index, seconds, result, error)
            notes = self._take_notes()
        callback_time += self._deliver(notes)
        with self._cond:
            self._stats.scheduler_time += clock.monotonic() - began - seconds - callback_time
        return True

    def _choose_job(self) -> JobRecord | None:
        """The job whose next step runs now, after ending, suspending or preempting whatever the policies say."""
        now, mono = self.clock.now(), self.clock.monotonic()
        self._sweep_suspended(now)
        job = self._running
        while True:
            if job is None:
                job = self._pick()
                if job is None:
                    return None
                self._activate(job, mono)
            if self._check(job, now, mono):
                if not job.started:
                    job.started_at = mono
                    job.queue_wait = mono - job.received_at
                return job
            job = None

    def _pick(self) -> JobRecord | None:
        waiting = self._waiting()
        if not waiting:
            return None
        return min(waiting, key=self._policies.priority.order_key)

    def _waiting(self) -> list[JobRecord]:
        return [r for q in self._queued.values() for r in q] + self._suspended

    def _activate(self, job: JobRecord, mono: float) -> None:
        if job.status == "suspended":
            self._suspended.remove(job)
            job.resumed_at = mono
            self._source_stats(job.source).resumes += 1
        else:
            self._queued[job.source].remove(job)
        job.status = "running"
        self._running = job

    def _check(self, job: JobRecord, now: float, mono: float) -> bool:
        """Whether the running `job` goes on; if not, it has been ended (`job.end_reason` says why) or suspended."""
        if job.cancel_requested:
            return self._end(job, EndReason.CANCELLED)
        if job.state is not None and job.state.finished:
            return self._end(job, EndReason.LAST_EXIT)
        reason = self._policies.deadline.stop_reason(job, now, lambda: self._time_to_next_exit(job))
        if reason is not None:
            return self._end(job, reason if job.started else EndReason.EXPIRED)
        newer = self._newer_same_source(job)
        if newer is not None:
            if self._policies.frames.supersedes(job, newer):
                if not job.started:
                    return self._end(job, EndReason.SUPERSEDED)
                self._record_preemption(job, newer, mono)
                return self._end(job, EndReason.PREEMPTED)
            job.preemption_blocked = True
        waiting = self._waiting()
        if job.started and waiting:  # a job not started yet was just picked as the most important
            order = self._policies.priority.order_key
            best = min(waiting, key=order)
            # A preemptor must also be the one picked next, or a suspended job could be picked and suspended again.
            if self._policies.priority.preempts(best, job) and order(best) < order(job):
                self._record_preemption(job, best, mono)
                if self._policies.suspend.keep(job, now):
                    return self._suspend(job, mono)
                return self._end(job, EndReason.PREEMPTED)
        return True

    def _newer_same_source(self, job: JobRecord) -> JobRecord | None:
        """The newest other waiting or running frame of the job's source, if newer than the job."""
        candidates = self._queued.get(job.source, []) + [r for r in self._suspended if r.source == job.source]
        if self._running is not None and self._running is not job and self._running.source == job.source:
            candidates.append(self._running)
        newest = max(candidates, key=JobRecord.recency, default=None)
        if newest is not None and newest.recency() > job.recency():
            return newest
        return None

    def _record_preemption(self, job: JobRecord, by: JobRecord, mono: float) -> None:
        # From when the stop became due: the newcomer's arrival, the end of the step that made the old job
        # eligible (its exit count), or the old job's (re)start, whichever was last.
        ready = max(by.received_at, job.blocked_until or -math.inf, job.resumed_at or -math.inf,
                    job.started_at or -math.inf)
        self._stats.preemptions += 1
        self._stats.preemption_reaction.add(max(0.0, mono - ready))

    def _suspend(self, job: JobRecord, mono: float) -> bool:
        limit = self._policies.suspend.max_suspended
        if len(self._suspended) >= limit:
            worst = max(self._suspended + [job], key=self._policies.priority.order_key)
            if worst is job:
                self._end(job, EndReason.PREEMPTED)
                return False
            self._end(worst, EndReason.EVICTED)
        self._running = None
        job.status = "suspended"
        job.suspended_at = mono
        job.suspensions += 1
        self._suspended.append(job)
        self._source_stats(job.source).suspensions += 1
        return False

    def _sweep_suspended(self, now: float) -> None:
        for job in list(self._suspended):
            if not self._policies.suspend.keep(job, now):
                self._end(job, EndReason.STALE)
                continue
            newer = self._newer_same_source(job)
            if newer is not None and self._policies.frames.supersedes(job, newer):
                self._end(job, EndReason.PREEMPTED)
        limit = self._policies.suspend.max_suspended
        while len(self._suspended) > limit:  # the limit was lowered by set_policies
            self._end(max(self._suspended, key=self._policies.priority.order_key), EndReason.EVICTED)

    def _after_step(self, job: JobRecord, step_index: int, seconds: float, result, error) -> None:
        if job.preemption_blocked:
            job.preemption_blocked = False
            job.blocked_until = self.clock.monotonic()
        stats = self._stats
        stats.steps += 1
        stats.model_time += seconds
        name = self._step_names[step_index]
        histogram = stats.step_time.get(name)
        if histogram is None:
            histogram = stats.step_time[name] = Histogram()
        histogram.add(seconds)
        job.model_time += seconds
        job.model_time_since_exit += seconds
        if error is not None:
            log.error("%s: job %d (%s) failed at step %s: %r", self.name, job.id, job.source, name, error,
                      exc_info=error)
            self._end(job, EndReason.FAILED)
            return
        if job.work:
            self.latency.observe(step_index, job.work[step_index], seconds)
        if result is None:
            return
        now, mono = self.clock.now(), self.clock.monotonic()
        job.exits_delivered += 1
        model_time, job.model_time_since_exit = job.model_time_since_exit, 0.0
        end_to_end = now - job.stamp
        source = self._source_stats(job.source)
        source.exits_delivered[result.index] = source.exits_delivered.get(result.index, 0) + 1
        source.latency.setdefault(result.index, Histogram()).add(end_to_end)
        deadline_met = None if job.deadline is None else now <= job.deadline
        if deadline_met is not None:
            if deadline_met:
                source.exit_deadline_hits += 1
                job.deadline_met_once = True
            else:
                source.exit_deadline_misses += 1
        timings = Timings(job.queue_wait, model_time, end_to_end, mono - job.received_at, job.model_time)
        # Decide now whether the job goes on, so the result can say whether it is final; it goes out before the
        # end that the decision may add.
        position = len(self._notes)
        self._check(job, now, mono)
        reason = job.end_reason
        self._notes.insert(position, JobResult(job.id, job.job, result, reason is not None, reason, job.priority,
                                               job.deadline, deadline_met, timings))

    def _end(self, job: JobRecord, reason: EndReason) -> bool:
        if job.status == "queued":
            self._queued[job.source].remove(job)
        elif job.status == "suspended":
            self._suspended.remove(job)
        elif job.status == "running":
            self._running = None
        job.status = "ended"
        job.end_reason = reason
        if job.state is not None:
            job.state.drop()
            job.state = None
        job.work = []
        del self._live[job.id]
        source = self._source_stats(job.source)
        source.ended_by_reason[reason.value] = source.ended_by_reason.get(reason.value, 0) + 1
        source.exits_per_job[job.exits_delivered] = source.exits_per_job.get(job.exits_delivered, 0) + 1
        if job.deadline is not None:
            if job.deadline_met_once:
                source.job_deadline_hits += 1
            else:
                source.job_deadline_misses += 1
        now, mono = self.clock.now(), self.clock.monotonic()
        timings = Timings(job.queue_wait, job.model_time, now - job.stamp, mono - job.received_at, job.model_time)
        self._notes.append(JobEnd(job.id, job.job, reason, job.exits_delivered, job.suspensions, job.priority,
                                  job.deadline, timings))
        return False

    def _shutdown_all(self) -> None:
        with self._cond:
            for job in list(self._live.values()):
                self._end(job, EndReason.SHUTDOWN)
            notes = self._take_notes()
        self._deliver(notes)

    # ----- prediction ---------------------------------------------------------------------------------------------
    def _refresh_work(self, job: JobRecord) -> None:
        """Work (GFLOPs under the mask in force) of the steps up to the next exit; masks change only at exits."""
        state = job.state
        if state.finished or job.work_for_exit == state.exits_done:
            return
        if not job.work:
            job.work = [0.0] * len(self._step_names)
        first, last = state.next_step, self._next_exit[state.next_step]
        job.work[first:last + 1] = self._step_work.of_steps(state, first, last)
        job.work_for_exit = state.exits_done

    def _time_to_next_exit(self, job: JobRecord) -> float:
        state = job.state
        if state is None:  # not started: no mask or size known yet, use typical step times
            return sum(self.latency.typical(i) for i in range(self._next_exit[0] + 1))
        self._refresh_work(job)
        first = state.next_step
        return sum(self.latency.predict(i, job.work[i]) for i in range(first, self._next_exit[first] + 1))

    # ----- delivery -----------------------------------------------------------------------------------------------
    def _take_notes(self) -> list[JobResult | JobEnd]:
        notes, self._notes = self._notes, []
        return notes

    def _deliver(self, notes: list[JobResult | JobEnd]) -> float:
        if not notes:
            return 0.0
        began = self.clock.monotonic()
        for note in notes:
            callback = self.on_result if isinstance(note, JobResult) else self.on_end
            if callback is None:
                continue
            try:
                callback(note)
            except Exception:  # a subscriber's bug must not stop the worker
                log.exception("%s: %s callback failed", self.name, type(note).__name__)
        elapsed = self.clock.monotonic() - began
        with self._cond:
            self._stats.callback_time += elapsed
            self._cond.notify_all()
        return elapsed

    def _source_stats(self, source: str) -> SourceStats:
        stats = self._stats.sources.get(source)
        if stats is None:
            stats = self._stats.sources[source] = SourceStats()
        return stats

"""Anytime runtime benchmark on a real model, this machine, real threads and the system clock.

    .venv/bin/python benchmarks/runtime.py            # ~3 minutes
    .venv/bin/python benchmarks/runtime.py --quick    # ~40 seconds, smaller soak

Prints four tables:
1. One camera at several frame rates and budgets (deadline = stamp + budget), newest frame wins, predictive
   deadlines: delivered exits per frame, deadline hit rate, preemption reaction time as a multiple of one HRNet
   module's mean time, scheduler overhead per step (share of model time).
2. The deadline policies side by side at one rate and budget: what predictive skipping saves.
3. Two cameras and a priority event source on one worker: how fast events preempt camera frames.
4. Soak: thousands of frames with preemption, suspension and resumption, cycling through policy sets; RSS at start
   and end, and a check that the accounting adds up exactly.

The model is `calibrate_untrained` (random weights scaled so that the confidence masks compute the paper's shares
after each exit): outputs mean nothing, masks, timings and FLOPs are realistic. Figures depend on the machine and on
whatever else runs on it: compare ratios taken in one run.
"""
from __future__ import annotations

import argparse
import gc
import heapq
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from anytime_perception import create_model
from anytime_perception.models.untrained import calibrate_untrained
from anytime_perception.runtime import (AnytimeScheduler, Job, JobEnd, JobResult, LatencyModel, Policies,
                                        RuntimeStats, SourceConfig)


# ----- helpers ------------------------------------------------------------------------------------------------
def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Progress:
    """A one-line textual progress bar on stderr."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.shown = total, label, -1

    def update(self, done: int) -> None:
        filled = int(30 * done / self.total)
        if filled != self.shown or done == self.total:
            self.shown = filled
            sys.stderr.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


@dataclass
class Stream:
    source: str
    fps: float
    priority: int | None = None


@dataclass
class Outcome:
    """What the callbacks saw, kept in memory bounded by the jobs in flight (the soak measures RSS)."""

    stats: RuntimeStats
    submitted: int = 0
    ended: bytearray = field(default_factory=bytearray)  # by job id: how many ends were delivered
    ends_by_reason: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, reason) -> count
    inconsistent: int = 0  # results out of order, or an end whose exit count disagrees with its results
    wasted_model_time: float = 0.0  # compute that ended in no result (steps after a job's last delivered exit)


def run_streams(model, images: list[torch.Tensor], streams: list[Stream], policies: Policies,
                sources: dict[str, SourceConfig], latency: LatencyModel, *, seconds: float | None = None,
                frames: int | None = None, progress: Progress | None = None,
                on_submitted=None) -> Outcome:
    """Cameras as a producer thread submitting at fixed rates; the scheduler's worker runs the model."""
    delivered_time: dict[int, float] = {}
    next_exit: dict[int, int] = {}
    outcome = Outcome(stats=RuntimeStats())
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            delivered_time[r.job_id] = delivered_time.get(r.job_id, 0.0) + r.timings.model_time
            if r.exit_index != next_exit.get(r.job_id, 1):
                outcome.inconsistent += 1
            next_exit[r.job_id] = r.exit_index + 1

    def on_end(e: JobEnd) -> None:
        with lock:
            if len(outcome.ended) <= e.job_id:
                outcome.ended.extend(bytes(e.job_id + 1024 - len(outcome.ended)))
            outcome.ended[e.job_id] = min(255, outcome.ended[e.job_id] + 1)
            key = (e.job.source, str(e.reason))
            outcome.ends_by_reason[key] = outcome.ends_by_reason.get(key, 0) + 1
            if next_exit.pop(e.job_id, 1) != e.exits_delivered + 1:
                outcome.inconsistent += 1
            outcome.wasted_model_time += e.timings.model_time - delivered_time.pop(e.job_id, 0.0)

    scheduler = AnytimeScheduler(model, policies=policies, sources=sources, latency_model=latency,
                                 on_result=on_result, on_end=on_end)
    scheduler.start()
    start = time.perf_counter()
    schedule = [(start + k / (len(streams) * s.fps), k, s) for k, s in enumerate(streams)]
    heapq.heapify(schedule)
    n = 0
    while True:
        due, k, stream = heapq.heappop(schedule)
        if (seconds is not None and due - start >= seconds) or (frames is not None and n >= frames):
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        image = images[n % len(images)]
        scheduler.submit(Job(image, stamp=scheduler.clock.now(), frame_id=f"{stream.source}/{n}",
                            source=stream.source, priority=stream.priority))
        n += 1
        if on_submitted is not None:
            on_submitted(n, scheduler)
        if progress is not None:
            progress.update(min(n, progress.total) if frames is not None else
                            min(progress.total, int(progress.total * (due - start) / seconds)))
        heapq.heappush(schedule, (due + 1.0 / stream.fps, k, stream))
    scheduler.stop(drain=True, timeout=60)
    outcome.stats = scheduler.stats()
    outcome.submitted = n
    return outcome


def module_time(stats: RuntimeStats, model) -> float:
    """Mean seconds of one HRNet module step."""
    names = {s.name for s in model.steps if s.kind == "module"}
    hist = [stats.step_time[n] for n in names if n in stats.step_time]
    return sum(h.total for h in hist) / max(1, sum(h.count for h in hist))


def summarise(outcome: Outcome, model) -> dict[str, float]:
    stats, total = outcome.stats, outcome.stats.total
    frames = total.received
    judged = total.job_deadline_hits + total.job_deadline_misses
    module = module_time(stats, model)
    reaction = stats.preemption_reaction
    return {
        "frames": frames,
        "exits_per_frame": sum(total.exits_delivered.values()) / max(1, frames),
        "hit_rate": total.job_deadline_hits / judged if judged else math.nan,
        "final_exit_rate": total.exits_delivered.get(model.num_exits, 0) / max(1, frames),
        "preempted": total.preempted / max(1, frames),
        "dropped": total.dropped / max(1, frames),
        "predicted_miss": total.ended_by_reason.get("predicted_miss", 0) / max(1, frames),
        "wasted": outcome.wasted_model_time / stats.model_time if stats.model_time else math.nan,
        "reaction_mean": reaction.mean / module if reaction.count else math.nan,
        "reaction_max": reaction.max / module if reaction.count else math.nan,
        "preemptions": reaction.count,
        "module_ms": module * 1e3,
        "overhead": stats.scheduler_overhead,
        "overhead_us": stats.scheduler_time / max(1, stats.steps) * 1e6,
    }


def pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


# ----- the benchmark ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="adpc_hrnet_w18s_seg")
    parser.add_argument("--size", default="128x256", help="HxW of the frames in tables 1-3")
    parser.add_argument("--rates", default="5,10,20", help="frames per second, table 1")
    parser.add_argument("--budgets", default="0.06,0.12", help="deadline budgets in seconds, table 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each table 1-3 run")
    parser.add_argument("--soak-frames", type=int, default=3000)
    parser.add_argument("--soak-size", default="32x64")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the worker is one more)")
    parser.add_argument("--quick", action="store_true", help="1.5 s runs and a 600-frame soak")
    parser.add_argument("--soak-only", action="store_true", help="skip tables 1-3")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.soak_frames = 1.5, 600
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    rates = [float(r) for r in args.rates.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]

    model = create_model(args.model)
    gen = torch.Generator().manual_seed(0)
    images = list(torch.randn(4, 1, 3, h, w, generator=gen))
    calibrate_untrained(model, torch.cat(images))
    latency = LatencyModel()  # shared by all runs, so the predictive policy starts warm
    print(f"# anytime runtime benchmark: {args.model} at {h}x{w}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} CPUs\n")

    warm = run_streams(model, images, [Stream("cam", 1000.0)], Policies.from_config({"deadline": "none",
                       "frames": {"name": "fifo", "max_queued": 100}}), {}, latency, frames=12)
    cumulative, exit_ms = 0.0, []
    for step in model.steps:
        cumulative += warm.stats.step_time[step.name].mean
        if step.kind == "exit":
            exit_ms.append(f"{cumulative * 1e3:.0f}")
    longest = max(model.steps, key=lambda st: warm.stats.step_time[st.name].mean)
    print(f"one frame, model time to exits 1..{model.num_exits}: {' / '.join(exit_ms)} ms; "
          f"one HRNet module step: {module_time(warm.stats, model) * 1e3:.2f} ms (mean); longest step: "
          f"{longest.name} {warm.stats.step_time[longest.name].mean * 1e3:.2f} ms. A preemption waits for the step in "
          f"progress, so its reaction is at most that step.\n")

    if not args.soak_only:
        tables(args, model, images, latency, rates, budgets)
    return soak(args, model, gen)


def tables(args, model, images, latency, rates, budgets) -> None:
    # 1. one camera, rates x budgets
    rows = []
    configs = [(fps, b) for b in budgets for fps in rates]
    progress = Progress(len(configs), "table 1")
    for k, (fps, budget) in enumerate(configs):
        progress.update(k)
        out = run_streams(model, images, [Stream("cam", fps)], Policies.from_config({"deadline": "predictive"}),
                          {"cam": SourceConfig(budget=budget)}, latency, seconds=args.seconds)
        s = summarise(out, model)
        rows.append([f"{fps:g}", f"{budget * 1e3:.0f}", str(s["frames"]), f"{s['exits_per_frame']:.2f}",
                     pct(s["final_exit_rate"]), pct(s["hit_rate"]), pct(s["preempted"]), pct(s["predicted_miss"]),
                     f"{ratio(s['reaction_mean'])} / {ratio(s['reaction_max'])}",
                     f"{100 * s['overhead']:.2f}% ({s['overhead_us']:.0f} us)"])
    progress.update(len(configs))
    progress.close()
    print("## 1. One camera: newest frame wins (min 1 exit), predictive deadlines\n")
    print_table(["fps", "budget ms", "frames", "exits/frame", "exit 4 delivered", "deadline hit",
                 "preempted", "stopped: predicted miss", "reaction mean / max (x module)",
                 "scheduler overhead / step"], rows)

    # 2. deadline policies side by side
    fps, budget = rates[min(1, len(rates) - 1)], budgets[0]
    rows = []
    progress = Progress(3, "table 2")
    for k, name in enumerate(("none", "deadline", "predictive")):
        progress.update(k)
        out = run_streams(model, images, [Stream("cam", fps)], Policies.from_config({"deadline": name}),
                          {"cam": SourceConfig(budget=budget)}, latency, seconds=args.seconds)
        s = summarise(out, model)
        rows.append([name, str(s["frames"]), f"{s['exits_per_frame']:.2f}", pct(s["hit_rate"]),
                     pct(out.stats.total.exit_deadline_hits / max(1, sum(out.stats.total.exits_delivered.values()))),
                     pct(s["wasted"])])
    progress.update(3)
    progress.close()
    print(f"## 2. Deadline policies at {fps:g} fps, budget {budget * 1e3:.0f} ms\n")
    print_table(["deadline policy", "frames", "exits/frame", "frames with an exit in time",
                 "delivered exits in time", "compute wasted (no result)"], rows)

    # 3. two cameras and priority events on one worker
    rows = []
    progress = Progress(2, "table 3")
    for k, suspend in enumerate(("drop", "suspend")):
        progress.update(k)
        policies = Policies.from_config({"deadline": "predictive",
                                         "suspend": suspend if suspend == "drop" else
                                         {"name": "suspend", "max_suspended": 2, "max_age": 0.5}})
        sources = {"front": SourceConfig(budget=0.25), "rear": SourceConfig(budget=0.25),
                   "event": SourceConfig(priority=1, budget=0.25)}
        out = run_streams(model, images, [Stream("front", 5), Stream("rear", 5), Stream("event", 2)], policies,
                          sources, latency, seconds=args.seconds)
        s = summarise(out, model)
        ev = out.stats.sources.get("event")
        cams = [out.stats.sources[c] for c in ("front", "rear") if c in out.stats.sources]
        cam_frames = sum(c.received for c in cams)
        rows.append([suspend, str(s["frames"]), f"{ev.exits_delivered.get(model.num_exits, 0)}/{ev.received}",
                     f"{sum(sum(c.exits_delivered.values()) for c in cams) / max(1, cam_frames):.2f}",
                     f"{sum(c.suspensions for c in cams)}/{sum(c.resumes for c in cams)}",
                     str(s["preemptions"]), f"{ratio(s['reaction_mean'])} / {ratio(s['reaction_max'])}",
                     f"{100 * s['overhead']:.2f}%"])
    progress.update(2)
    progress.close()
    print("## 3. Two cameras (5 fps each) and priority events (2 fps) sharing one worker and one model\n")
    print_table(["suspend policy", "frames", "events with all exits", "camera exits/frame", "suspended/resumed",
                 "preemptions", "reaction mean / max (x module)", "scheduler overhead"], rows)



def soak(args, model, gen: torch.Generator) -> int:
    sh, sw = (int(v) for v in args.soak_size.split("x"))
    soak_images = list(torch.randn(4, 1, 3, sh, sw, generator=gen))
    mixes = [
        {"frames": "newest_wins", "deadline": "predictive", "suspend": {"name": "suspend", "max_age": 0.2}},
        {"frames": "finish_then_latest", "deadline": "deadline",
         "suspend": {"name": "suspend", "max_suspended": 1, "max_age": 0.1}},
        {"frames": {"name": "newest_wins", "min_exits_before_preempt": 0}, "deadline": "none", "suspend": "drop"},
        {"frames": {"name": "fifo", "max_queued": 2}, "deadline": "predictive",
         "suspend": {"name": "suspend", "max_suspended": 3, "max_age": 0.3}},
    ]
    sources = {"front": SourceConfig(budget=0.08), "rear": SourceConfig(budget=0.15),
               "event": SourceConfig(priority=2, budget=0.1)}
    soak_latency = LatencyModel()
    progress = Progress(args.soak_frames, "soak")
    rss: list[float] = []
    cycle = max(1, args.soak_frames // 12)

    def during(n: int, scheduler: AnytimeScheduler) -> None:
        if n % cycle == 0:  # switch policies while frames are in flight; sample memory (the first cycle warms up)
            scheduler.set_policies(Policies.from_config(mixes[(n // cycle) % len(mixes)]))
            gc.collect()
            rss.append(rss_mib())

    began = time.perf_counter()
    out = run_streams(model, soak_images, [Stream("front", 40), Stream("rear", 40), Stream("event", 5, 2)],
                      Policies.from_config(mixes[0]), sources, soak_latency, frames=args.soak_frames,
                      progress=progress, on_submitted=during)
    progress.close()
    elapsed = time.perf_counter() - began
    gc.collect()
    rss.append(rss_mib())
    stats, total = out.stats, out.stats.total
    checks = {
        "every job ended exactly once": out.submitted == total.received
        and all(out.ended[i] == 1 for i in range(1, out.submitted + 1))
        and sum(out.ended) == out.submitted,
        "received = completed + preempted + dropped": total.received == out.submitted
        and total.received == total.completed + total.preempted + total.dropped and total.in_flight == 0,
        "per-source balance": stats.balanced,
        "ends by reason = stats by reason": out.ends_by_reason == {
            (src, r): n for src, st in stats.sources.items() for r, n in st.ended_by_reason.items()},
        "results per job = exits 1..n": out.inconsistent == 0,
    }
    print(f"## 4. Soak: {out.submitted} frames at {sh}x{sw} in {elapsed:.0f} s (2 cameras at 40 fps, events at "
          f"5 fps), policies switched every {cycle} frames\n")
    start_rss = rss[0]  # after the first cycle: allocator and caches are warm
    print_table(["received", "completed", "preempted", "dropped", "suspended / resumed", "exits delivered",
                 "RSS start MiB", "RSS end MiB"],
                [[str(total.received), str(total.completed), str(total.preempted), str(total.dropped),
                  f"{total.suspensions} / {total.resumes}", str(sum(total.exits_delivered.values())),
                  f"{start_rss:.1f}", f"{rss[-1]:.1f}"]])
    print("end reasons: " + ", ".join(f"{r} {n}" for r, n in sorted(total.ended_by_reason.items())))
    print("RSS every " + f"{cycle} frames (MiB): " + " ".join(f"{v:.1f}" for v in rss))
    for name, ok in checks.items():
        print(f"accounting: {name}: {'OK' if ok else 'FAILED'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

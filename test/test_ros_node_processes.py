"""anytime_node as its console script in another process (localhost discovery, this session's domain id): every
exit of every frame comes back in order with the input's header, a newer frame and a PriorityEvent preempt, the
perceive action answers, /diagnostics counts it all, SIGINT ends the node cleanly, and bad start-up configuration
ends it with a clear message and status 1, never a traceback.

The two scheduling checks rely only on a frame published right after another reaching the node before the first
has run all of its exits (the model needs hundreds of milliseconds for that at the size used here); they assert
what happened from the node's own accounting, not how long anything took."""
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import rclpy
    from action_msgs.msg import GoalStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Log
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from anytime_perception.action import Perceive
    from anytime_perception.msg import AnytimeSegmentation, FrameEnd, PriorityEvent
    from anytime_perception.ros.image_codec import array_to_image
    from anytime_perception.ros.perceive_action import ACTION_SERVICE_QOS
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error)

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


CLIENTS = []


def wait_for(predicate, timeout=60.0, what="condition", process=None):
    end = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the node exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > end:
            seen = [{k: v for k, v in c.diagnostics.items()} for c in CLIENTS[-1:]]
            results = [{cam: [(m.header.frame_id, m.exit_index, m.stop_reason) for m in r]
                        for cam, r in c.results.items()} for c in CLIENTS[-1:]]
            raise AssertionError(f"timed out waiting for {what}; diagnostics {seen}; results {results}")
        time.sleep(0.01)


def node_process(namespace, *params):
    command = [sys.executable, "-m", "anytime_perception.ros.process", "--ros-args", "-r", f"__ns:={namespace}",
               "-p", "torch_threads:=1", "-p", "diagnostics_period_s:=0.2"]
    for param in params:
        command += ["-p", param]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError("the node did not stop within 20 s of SIGINT:\n" + output[-2000:])
    return process.returncode, output


def image(value, frame_id, height=144, width=192):
    now = time.time_ns()
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = now // 10**9, now % 10**9
    rng = np.random.default_rng(value)
    return array_to_image(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "rgb8", header)


class Client:
    def __init__(self, context, namespace, cameras=("",)):
        self.node = rclpy.create_node("test_client", namespace=namespace, context=context)
        self.results = {c: [] for c in cameras}
        self.images = {}
        for camera in cameras:
            prefix = f"{camera}/" if camera else ""
            self.node.create_subscription(AnytimeSegmentation, prefix + "segmentation", self.results[camera].append,
                                          RELIABLE)
            self.images[camera] = self.node.create_publisher(Image, prefix + "image", RELIABLE)
        self.events = self.node.create_publisher(PriorityEvent, "priority_event", RELIABLE)
        self.diagnostics = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.logs = []
        self.node.create_subscription(Log, "/rosout", self.logs.append, QoSProfile(depth=1000))
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        CLIENTS.append(self)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def values(self, part):
        return next((v for name, v in list(self.diagnostics.items()) if name.endswith(part)), {})

    def close(self):
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def finals(results):
    return [m for m in results if m.is_final and m.header.frame_id != "probe"]


def prime(client, camera, process, status):
    """Publish probe frames until the node has taken one and finished with it, then return its counters.

    A publisher sees a subscription matched before the subscriber's (best-effort) reader has necessarily matched
    the publisher; frames sent in between are lost without a trace. Probing until one arrives makes the test
    independent of that discovery race."""
    def took_one():
        values = client.values(status)
        return int(values.get("received", "0")) >= 1 and values.get("jobs.in_flight") == "0" and \
            int(values.get("jobs.completed", "0")) + int(values.get("jobs.preempted", "0")) + \
            int(values.get("jobs.dropped", "0")) == int(values.get("accepted", "0")) >= 1

    wait_for(lambda: client.images[camera].get_subscription_count() > 0, what="the node to subscribe",
             process=process)
    end = time.monotonic() + 60
    while int(client.values(status).get("received", "0")) < 1:
        if time.monotonic() > end or process.poll() is not None:
            raise AssertionError(f"no probe frame reached the node: {client.values(status)}")
        client.images[camera].publish(image(0, "probe"))
        retry = time.monotonic() + 1.0                # between retries only; nothing is asserted about time
        while int(client.values(status).get("received", "0")) < 1 and time.monotonic() < retry:
            time.sleep(0.01)
    # no more probes once one arrived: a busy machine may need longer than a probe interval for a frame
    wait_for(lambda: took_one(), timeout=120, what="the probes to end", process=process)
    time.sleep(0.5)                                   # the next /diagnostics with the final counts
    return {k: int(v) for k, v in client.values(status).items() if v.isdigit()}


def test_node_in_another_process_serves_topics_action_and_diagnostics(ros_context):
    namespace = f"/p_{uuid.uuid4().hex[:8]}"
    process = node_process(namespace, "input_height:=64", "input_width:=96", "policies.frames:=fifo")
    client = Client(ros_context, namespace)
    try:
        base = prime(client, "", process, "input image")
        sent = [image(i, f"cam_{i}") for i in range(3)]
        for msg in sent:
            client.images[""].publish(msg)
        wait_for(lambda: len(finals(client.results[""])) == 3, what="3 frames", process=process)
        for i, msg in enumerate(sent):
            mine = [m for m in client.results[""] if m.header == msg.header]
            assert [m.exit_index for m in mine] == [1, 2, 3, 4]
            assert mine[-1].stop_reason == "last_exit" and {m.header.frame_id for m in mine} == {f"cam_{i}"}
            assert (mine[0].labels.width, mine[0].labels.height, mine[0].labels.encoding) == (192, 144, "mono8")

        # the action, across processes
        action = ActionClient(client.node, Perceive, "perceive")
        assert action.wait_for_server(timeout_sec=20)
        goal = Perceive.Goal(image=image(9, "on_demand"), deadline_ms=-1.0, priority=1)
        future = action.send_goal_async(goal)
        wait_for(future.done, what="goal response")
        handle = future.result()
        assert handle.accepted
        result_future = handle.get_result_async()
        wait_for(result_future.done, what="goal result", process=process)
        result = result_future.result().result
        assert (result.stop_reason, result.exits_completed) == ("last_exit", 4)
        assert result.segmentation.header == goal.image.header

        wait_for(lambda: client.values("input image").get("jobs.completed") == str(base["jobs.completed"] + 3),
                 what="/diagnostics", process=process)
        assert client.values("input image")["exit_4.published"] == str(base["exit_4.published"] + 3)
        wait_for(lambda: client.values("action perceive").get("goals.succeeded") == "1",
                 what="the goal in /diagnostics", process=process)
    finally:
        client.close()
        code, output = stop(process)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert "shipped weights of adpc_hrnet_w18s_person_seg" in output and "NO TRAINED WEIGHTS" not in output


def test_preemption_by_a_newer_frame_and_by_a_priority_event_across_processes(ros_context):
    namespace = f"/p_{uuid.uuid4().hex[:8]}"
    process = node_process(namespace, "input_height:=288", "input_width:=384", "cameras:=[front,rear]",
                           "policies.frames:=newest_wins")
    client = Client(ros_context, namespace, cameras=("front", "rear"))
    try:
        base = {camera: prime(client, camera, process, f"camera {camera}") for camera in ("front", "rear")}
        # a newer frame of the same camera takes over from the running one
        first, second = image(1, "rear"), image(2, "rear")
        client.images["rear"].publish(first)
        client.images["rear"].publish(second)
        wait_for(lambda: any(m.header == second.header and m.is_final for m in client.results["rear"]),
                 what="the newer frame", process=process)
        assert [m.exit_index for m in client.results["rear"] if m.header == second.header] == [1, 2, 3, 4]
        older = [m for m in client.results["rear"] if m.header == first.header]
        assert len(older) < 4 and not [m for m in older if m.stop_reason == "last_exit"]
        wait_for(lambda: client.values("camera rear").get("jobs.in_flight") == "0"
                 and client.values("camera rear").get("jobs.completed") == str(base["rear"]["jobs.completed"] + 1),
                 what="rear accounting", process=process)
        rear = client.values("camera rear")
        cut = sum(int(rear.get(f"ended.{r}", "0")) - base["rear"].get(f"ended.{r}", 0)
                  for r in ("preempted", "superseded"))
        assert cut == 1

        # a priority event lets the next front frame preempt the running rear frame
        wait_for(lambda: client.events.get_subscription_count() > 0, what="the event subscription",
                 process=process)
        client.events.publish(PriorityEvent(priority=7, reason="pedestrian", source="front", num_frames=1))
        wait_for(lambda: any("pedestrian" in m.msg for m in client.logs), what="the node to take the event",
                 process=process)
        background, urgent = image(3, "rear"), image(4, "front")
        client.images["rear"].publish(background)
        wait_for(lambda: any(m.header == background.header for m in client.results["rear"]),
                 what="the rear frame to start", process=process)
        client.images["front"].publish(urgent)
        wait_for(lambda: any(m.header == urgent.header and m.is_final for m in client.results["front"]),
                 what="the urgent frame", process=process)
        urgent_exits = [m for m in client.results["front"] if m.header == urgent.header]
        assert [m.exit_index for m in urgent_exits] == [1, 2, 3, 4] and {m.priority for m in urgent_exits} == {7}
        wait_for(lambda: client.values("camera rear").get("jobs.in_flight") == "0"
                 and client.values("camera front").get("priority_event_frames") == "1", what="accounting",
                 process=process)
        preempted = int(client.values("camera rear").get("ended.preempted", "0")) - base["rear"].get("ended.preempted", 0)
        assert preempted in (1, 2)          # the background frame (and possibly the first one above)
        assert [m.exit_index for m in client.results["rear"] if m.header == background.header][-1] < 4
    finally:
        client.close()
        code, output = stop(process)
    assert code == 0 and "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("params, message", [
    (["checkpoint:=/nonexistent/weights.pth"], "does not exist"),
    (["checkpoint:=CORRUPT"], "cannot load checkpoint"),
    (["policies.frames:=bogus"], "policies.frames must be one of"),
    (["model:=no_such_model"], "unknown model"),
    (["model:=adpc_hrnet_w48_seg"], "has no weights shipped with the package"),   # checkpoint 'pretrained'
    (["input_height:=64"], "both be set"),
    (["deadline_ms:=100"], "must be of type double"),
])
def test_bad_configuration_exits_with_a_clear_message(tmp_path, params, message):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    params = [p.replace("CORRUPT", str(corrupt)) for p in params]
    process = node_process(f"/p_{uuid.uuid4().hex[:8]}", *params)
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, output[-2000:]
    assert message in output and "Traceback" not in output, output[-2000:]


# ----- nothing lost, nothing silent (issue 10) ---------------------------------------------------------------------
TERMINAL = {GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_CANCELED}


def action_client(node):
    return ActionClient(node, Perceive, "perceive", goal_service_qos_profile=ACTION_SERVICE_QOS,
                        result_service_qos_profile=ACTION_SERVICE_QOS, cancel_service_qos_profile=ACTION_SERVICE_QOS)


def test_goal_bursts_and_cancel_storms_all_reach_a_terminal_status_seen_by_the_client(ros_context):
    namespace = f"/p_{uuid.uuid4().hex[:8]}"
    process = node_process(namespace, "input_height:=64", "input_width:=96")
    client = Client(ros_context, namespace)
    try:
        action = action_client(client.node)
        assert action.wait_for_server(timeout_sec=60)
        # 50 goals at once: each gets a goal response; each accepted one a terminal status
        burst = [action.send_goal_async(Perceive.Goal(image=image(i, f"burst_{i}"), deadline_ms=-1.0))
                 for i in range(50)]
        wait_for(lambda: all(f.done() for f in burst), timeout=120, what="50 goal responses", process=process)
        accepted = [f.result() for f in burst if f.result().accepted]
        assert accepted                                 # up to max_concurrent_goals, more as goals finish
        results = [h.get_result_async() for h in accepted]
        wait_for(lambda: all(r.done() for r in results), timeout=120, what="the burst's results", process=process)
        assert {r.result().status for r in results} <= TERMINAL

        # 50 goals 100 ms apart, half of them cancelled at random moments
        rng = np.random.default_rng(7)
        responses, cancels, cancelled = [], [], set()
        for i in range(50):
            responses.append(action.send_goal_async(Perceive.Goal(image=image(i, f"paced_{i}"), deadline_ms=-1.0)))
            time.sleep(0.1)
            pending = [f for f in responses if f.done() and f.result().accepted and id(f) not in cancelled]
            if pending and rng.random() < 0.5:
                chosen = pending[int(rng.integers(len(pending)))]
                cancelled.add(id(chosen))
                cancels.append(chosen.result().cancel_goal_async())
        wait_for(lambda: all(f.done() for f in responses), timeout=120, what="50 goal responses", process=process)
        accepted = [f.result() for f in responses if f.result().accepted]
        results = [h.get_result_async() for h in accepted]
        wait_for(lambda: all(r.done() for r in results), timeout=180, what="every accepted goal's result",
                 process=process)
        wait_for(lambda: all(c.done() for c in cancels), timeout=60, what="every cancel response", process=process)
        assert len(cancels) >= 10 and {r.result().status for r in results} <= TERMINAL
        wait_for(lambda: sum(int(v) for k, v in client.values("action perceive").items() if k.startswith("goals."))
                 == len([f for f in burst if f.result().accepted]) + len(accepted), what="goals in /diagnostics",
                 process=process)
        received = int(client.values("action perceive")["received"])
        assert received == 100                                     # every goal request reached the node
    finally:
        client.close()
        code, output = stop(process)
    assert code == 0 and "Traceback" not in output and "[ERROR]" not in output, output[-3000:]


def test_frames_at_30_hz_are_all_accounted_for_and_each_accepted_frame_ends_once():
    """1024x2048 rgb8 at 30 Hz for 20 s from another process: published = received + lost in /diagnostics (lost
    counted from the node's first frame of that publisher) and exactly one frame_end per accepted frame."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "node_soak.py"
    run = subprocess.run([sys.executable, str(script), "--minutes", str(20 / 60), "--cameras", "1", "--input", "128",
                          "256", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    (camera,) = result["cameras"].values()
    assert camera["published"] >= 500
    assert camera["received"] + camera["lost"] == camera["published"] - camera["published_before_first_received"]
    assert camera["received"] >= 1 and camera["accepted"] >= 1
    assert camera["frame_ends"] == camera["frames_ended"] == camera["accepted"]
    assert result["exit_code"] == 0 and result["errors"] == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_frame_ends_the_node_without_an_error_and_the_frame_with_its_frame_end(ros_context, signum):
    namespace = f"/p_{uuid.uuid4().hex[:8]}"
    process = node_process(namespace, "input_height:=288", "input_width:=384")
    client = Client(ros_context, namespace)
    ends = []
    client.node.create_subscription(FrameEnd, "frame_end", ends.append, RELIABLE)
    sent = []
    try:
        wait_for(lambda: client.images[""].get_subscription_count() > 0, what="the node to subscribe",
                 process=process)
        while not client.results[""]:           # until one frame reached the node (a discovery race otherwise)
            sent.append(image(len(sent), f"frame_{len(sent)}"))
            client.images[""].publish(sent[-1])
            retry = time.monotonic() + 2.0      # between retries only; nothing is asserted about time
            while not client.results[""] and time.monotonic() < retry:
                time.sleep(0.005)
            assert process.poll() is None and len(sent) < 60, "no frame reached the node"
        process.send_signal(signum)             # while the frame's later exits are computed
        output = process.communicate(timeout=30)[0]
        code = process.returncode
        headers = {(m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec) for m in client.results[""]}
        wait_for(lambda: len({(m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec) for m in ends})
                 >= len(headers), timeout=10, what="a frame_end for every frame with exits")
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
    assert code == 0, output[-3000:]
    assert "[ERROR]" not in output and "Traceback" not in output, output[-3000:]
    for header in headers:
        (end,) = [m for m in ends if (m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec) == header]
        exits = [m for m in client.results[""] if m.header == end.header]
        assert end.exits_delivered == len(exits) >= 1 and end.stop_reason != "none"

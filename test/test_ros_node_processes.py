"""anytime_node as its console script in another process (localhost discovery, this session's domain id): every
exit of every frame comes back in order with the input's header, a newer frame and a PriorityEvent preempt, the
perceive action answers, /diagnostics counts it all, SIGINT ends the node cleanly, and bad start-up configuration
ends it with a clear message and status 1, never a traceback.

The two scheduling checks rely only on a frame published right after another reaching the node before the first
has run all of its exits (the model needs hundreds of milliseconds for that at the size used here); they assert
what happened from the node's own accounting, not how long anything took."""
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Log
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from anytime_perception.action import Perceive
    from anytime_perception.msg import AnytimeSegmentation, PriorityEvent
    from anytime_perception.ros.image_codec import array_to_image
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
    command = [sys.executable, "-m", "anytime_perception.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
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
    while not took_one():
        if time.monotonic() > end or process.poll() is not None:
            raise AssertionError(f"no probe frame reached the node: {client.values(status)}")
        client.images[camera].publish(image(0, "probe"))
        time.sleep(0.3)                               # between retries only; nothing is asserted about time
    wait_for(lambda: took_one(), what="the probes to end", process=process)
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
    assert "NO TRAINED WEIGHTS" in output and "calibrated-untrained" in output


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

"""``anytime_node --lifecycle``: the same node as a managed (lifecycle) node, on the same core.

    configure   declare-time checks, load the model (or fail: the transition returns FAILURE and the log says why),
                create the runtime, publishers (lifecycle publishers: silent unless active) and the action server
    activate    subscribe to the inputs, start the worker, latch label_info, start /diagnostics
    deactivate  unsubscribe and stop the worker (frames and goals in flight end with `shutdown`)
    cleanup     destroy publishers and the action server, free the model (and the CUDA cache)
    shutdown    deactivate and clean up from any state

Parameters are declared and checked at construction (a bad one ends the process as for the plain node); the
read-only ones (model, checkpoint, device, input size, cameras, ...) are fixed for the process, and every
configure loads the model they name.
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .node import AnytimePerception
from .node_parameters import ConfigurationError


class AnytimeLifecycleNode(LifecycleNode):
    def __init__(self, node_name: str = "anytime_node", *, model_loader=None, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.perception = AnytimePerception(self, create_publisher=self.create_lifecycle_publisher,
                                            model_loader=model_loader)
        try:
            self.perception.declare()
        except ConfigurationError as error:
            self.get_logger().fatal(str(error))
            raise
        self.get_logger().info(f"lifecycle node {self.get_fully_qualified_name()} is unconfigured: "
                               f"`ros2 lifecycle set {self.get_fully_qualified_name()} configure`, then `activate`")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.perception.configure()
        except ConfigurationError as error:
            self.get_logger().error(f"configure failed: {error}")
            self.perception.cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)     # activates the lifecycle publishers
        self.perception.activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.perception.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self.perception.cleanup()
        super().destroy_node()

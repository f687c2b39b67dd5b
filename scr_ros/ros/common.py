"""Shared rclpy glue: the message factory, parameter declaration from the spec tables,
diagnostics, optional TF, and the executor loop both nodes run in.

Only rclpy and the message packages are needed (all on PyPI as ROS 2 Jazzy wheels). ``tf2_ros``
is imported by :func:`import_tf2` only, when a mode that uses TF is configured, and
``/diagnostics`` is published with ``diagnostic_msgs`` directly, so no ``diagnostic_updater``.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import logging
import sys
import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import ClockType
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time

from ..messages import MessageError, MessageFactory, transform_to_matrix
from ..node_logic.params import ParameterError
from ..settings import Setting

# Image subscriptions take sensor-data QoS (best effort: it matches every camera driver) and let
# the user override its policies per topic, as ROS 2 packages do: e.g. the parameter
# qos_overrides./image.subscription.reliability: reliable. Over loopback a best-effort reader
# of 640x480 rgb8 images from a reliable publisher received 80 of 300 (fragments lost), a
# reliable one all 300 (docs/soak.md).
IMAGE_QOS_OVERRIDES = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}


def _rclpy_class(typename: str) -> type:
    package, kind, name = typename.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def rclpy_factory() -> MessageFactory:
    """Messages as rclpy classes; uint8[] fields take array.array('B') (what rclpy stores them as)."""
    return MessageFactory(
        _rclpy_class,
        lambda a: array.array("B", np.ascontiguousarray(a, dtype=np.uint8).tobytes()),
        lambda a: array.array(
            "d", np.asarray(a, dtype=np.float64).reshape(-1).tolist()
        ),  # float64[] (Humble refuses numpy here)
    )


def declare_parameters(node: Node, specs: tuple[Setting, ...]) -> dict:
    """Declare every parameter with its description and range; return the checked values."""
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(
            description=spec.help + ("" if spec.dynamic else " (read at start)"), read_only=False
        )
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
        # A missing bound is the widest the type allows (ROS ranges always have both ends).
        if spec.type is float and (spec.min is not None or spec.max is not None):
            lo, hi = (
                (-sys.float_info.max if spec.min is None else float(spec.min)),
                (sys.float_info.max if spec.max is None else float(spec.max)),
            )
            descriptor.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        elif spec.type is int and (spec.min is not None or spec.max is not None):
            lo, hi = (
                (-(2**63) if spec.min is None else int(spec.min)),
                (2**63 - 1 if spec.max is None else int(spec.max)),
            )
            descriptor.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
        # rclpy would type an empty list default as a byte array; an empty default means "not
        # given" here, so the parameter is declared as a float array, unset unless overridden.
        default = Parameter.Type.DOUBLE_ARRAY if spec.type is list and not spec.default else spec.default
        try:
            # rclpy checks an override (YAML, -p) against the default's type and the range here.
            value = node.declare_parameter(spec.name, default, descriptor).value
            if value is None:
                value = spec.default
        except InvalidParameterTypeException as exc:
            hint = " (write a float such as 2.0, not 2)" if spec.type is float else ""
            raise SystemExit(
                f"{node.get_name()}: parameter {spec.name!r} must be {spec.type.__name__}{hint}: {exc}"
            ) from None
        except InvalidParameterValueException as exc:
            raise SystemExit(f"{node.get_name()}: {exc}") from None
        try:
            values[spec.name] = spec.check(value, error=ParameterError)
        except ParameterError as exc:
            raise SystemExit(f"{node.get_name()}: {exc}") from None
    return values


def parameter_callback(specs: tuple[Setting, ...], apply, current):
    """An on-set-parameters callback: rejects invalid values and changes to start-only parameters,
    hands the valid dynamic changes to ``apply(dict)`` (which may raise to refuse them).

    ``current()`` gives the values in use: setting a start-only parameter to the value it already
    has is accepted, so ``ros2 param load`` of the node's own YAML file succeeds."""
    table = {s.name: s for s in specs}

    def callback(params) -> SetParametersResult:
        changes = {}
        values = current()
        for p in params:
            spec = table.get(p.name)
            if spec is None:
                continue  # parameters we do not own (use_sim_time, ...)
            try:
                value = spec.check(p.value, error=ParameterError)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            if not spec.dynamic:
                if value != values.get(p.name):
                    return SetParametersResult(
                        successful=False, reason=f"{p.name} is read at start; restart the node to change it"
                    )
                continue
            changes[p.name] = value
        if changes:
            try:
                apply(changes)
            except Exception as exc:  # noqa: BLE001 - the reason goes back to `ros2 param set`
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return callback


class Diagnostics:
    """``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``) once per ``period_s``, written
    with the message package alone. ``fill()`` returns (level 0 OK / 1 WARN / 2 ERROR, summary,
    key-values) for one status named ``node name: task``."""

    def __init__(self, node: Node, task: str, fill, period_s: float = 1.0) -> None:
        self.node, self.fill = node, fill
        self.name = f"{node.get_name()}: {task}"
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        level, message, values = self.fill()
        # DiagnosticStatus.level is a ROS `byte`: rclpy takes a 1-byte bytes (like DiagnosticStatus.OK), not an int.
        status = DiagnosticStatus(
            level=bytes([level]),
            name=self.name,
            message=message,
            hardware_id="scr_ros",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def _topic_remaps(argv: list[str]) -> list[str]:
    """The ``-r FROM:=TO`` rules of ``argv``'s ``--ros-args`` sections that apply to any node of
    the process, without the node-name and namespace ones (``__node``, ``__name``, ``__ns``) and
    without rules aimed at one node (``node:FROM:=TO``)."""
    rules, in_ros, i = [], False, 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--ros-args":
            in_ros = True
        elif tok == "--":
            in_ros = False
        elif in_ros and tok in ("-r", "--remap") and i + 1 < len(argv):
            rule = argv[i + 1]
            lhs = rule.split(":=", 1)[0]
            if ":=" in rule and lhs not in ("__node", "__name", "__ns") and ":" not in lhs:
                rules += ["-r", rule]
            i += 1
        i += 1
    return rules


def side_node(parent: Node, suffix: str, argv: list[str] | None = None) -> Node:
    """A node beside ``parent`` in the same process and namespace, ``<parent name>_<suffix>``, for
    what must not run on the parent's single-threaded executor (the TF listener, services that
    wait): the caller spins it on its own thread (:class:`SideSpinner`, or tf2's ``spin_thread``).

    It takes the process's topic remappings (``/tf:=tf`` on a namespaced robot) and the parent's
    ``use_sim_time``, but not the process's node-name remapping, which would give it the
    parent's name."""
    rules = _topic_remaps(sys.argv if argv is None else argv)
    return Node(
        f"{parent.get_name()}_{suffix}",
        namespace=parent.get_namespace(),
        context=parent.context,
        cli_args=["--ros-args", *rules] if rules else None,
        use_global_arguments=False,
        start_parameter_services=False,
        parameter_overrides=[Parameter("use_sim_time", value=parent.get_parameter("use_sim_time").value)],
    )


class SideSpinner:
    """Spins one node on its own single-threaded executor and thread until :meth:`stop`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, name=f"{node.get_name()}_executor", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except (ExternalShutdownException, RuntimeError):
            pass  # the context shut down under us

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def import_tf2(what: str, instead: str):
    """The ``tf2_ros`` module, or SystemExit saying that ``what`` needs it and what to do ``instead``."""
    try:
        return importlib.import_module("tf2_ros")
    except ImportError as exc:
        raise SystemExit(
            f"{what} needs tf2_ros, which is not installed here ({exc}); it comes with a ROS 2 installation "
            f"(source /opt/ros/<distro>/setup.bash), not from PyPI. Or {instead}."
        ) from None


def lookup(buffer, target: str, source: str, stamp_ns: int | None, timeout_s: float) -> np.ndarray:
    """T_target_source from tf2 at ``stamp_ns`` (None: latest), as a checked 4x4; LookupError with tf2's reason."""
    from tf2_ros import TransformException

    # ROS_TIME like the node clock: tf2 compares stamps with the clock and rclpy refuses to
    # compare times of different clock types.
    when = Time(nanoseconds=0 if stamp_ns is None else int(stamp_ns), clock_type=ClockType.ROS_TIME)
    try:
        msg = buffer.lookup_transform(target, source, when, timeout=Duration(seconds=timeout_s))
    except TransformException as exc:
        raise LookupError(str(exc)) from None
    try:
        return transform_to_matrix(msg.transform, f"TF {target} -> {source}")
    except MessageError as exc:
        raise LookupError(str(exc)) from None


class _RclpyLog(logging.Handler):
    """The library's log (the ``scr_ros`` loggers) in the node's own log, level for level, so a
    robot's log has the library's warnings beside the node's."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node_log = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
            if record.levelno >= logging.ERROR:
                self.node_log.error(line)
            elif record.levelno >= logging.WARNING:
                self.node_log.warning(line)
            elif record.levelno >= logging.INFO:
                self.node_log.info(line)
            else:
                self.node_log.debug(line)
        except Exception:  # noqa: BLE001 - logging must not raise into the work it reports on
            self.handleError(record)


@contextlib.contextmanager
def library_log_to(node: Node):
    """Route the ``scr_ros`` log (INFO and up) to ``node``'s logger while the node runs."""
    logger = logging.getLogger("scr_ros")
    saved = (logger.level, logger.propagate)
    handler = _RclpyLog(node)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one copy, in the node's log
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def spin(make_node, args=None) -> None:
    """Run one node until Ctrl-C or shutdown; its own worker threads stop in destroy_node().

    A single-threaded executor: the work (inference, map builds) runs on the nodes' own threads,
    and callbacks only hand data over. rclpy's MultiThreadedExecutor spent a whole core on its
    own bookkeeping while inference ran and took in 3 of 30 images a second; this one takes in
    20 (``benchmarks/soak.py``, docs/soak.md)."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with library_log_to(node):
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()

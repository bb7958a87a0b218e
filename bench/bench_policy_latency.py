"""Policy latency benchmark: the bridge and the policy node as processes, a timing client in this one.

    .venv/bin/python bench/bench_policy_latency.py [--actions 30] [--checkpoint DIR] [--threads 0]
        [--publish-rate 10] [--domain-id 219] [--warmup 3] [--coarse-prior 0]

The bridge runs one-action episodes (``max_steps 1``); for each episode this process resets the bridge and
times the policy's answer: the policy's own inference time (``MirrorAgent.act``, from ``policy_actions``),
its observation-stamp -> publish latency, and the observation-stamp -> ``keyframe_action`` receive latency
measured here (the stamp comes from ``target_pose``, which carries the observation's stamp). Reports
mean / p50 / p99 / max over ``--actions`` actions after ``--warmup`` ones (the first calls fill caches).
Target: observation -> receive (inference + messaging) < 100 ms with the CPU model. Without
``--checkpoint`` it uses a tiny untrained model of the ``cpu_tiny`` sizes, which is what
``config/train_cpu_small.yaml`` trains (speed does not depend on the weights). DDS stays on loopback.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def stats(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return (
        f"mean {a.mean():7.1f}  p50 {np.percentile(a, 50):7.1f}  p99 {np.percentile(a, 99):7.1f}  "
        f"max {a.max():7.1f} ms"
    )


def make_tiny_checkpoint(directory: Path) -> Path:
    from mirror.model import MirrorModel
    from sim_bridge.tasks import make_task

    task = make_task("push_buttons")
    vocabulary = list(dict.fromkeys(task.descriptions(v)[0] for v in range(task.variation_count())))
    MirrorModel.from_names(instructions=vocabulary).save_pretrained(directory)
    return directory


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=30)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="policy torch threads (0 = torch default)")
    parser.add_argument(
        "--coarse-prior", type=float, default=0.0, help="the policy's coarse_prior parameter (0 = as trained)"
    )
    parser.add_argument("--publish-rate", type=float, default=10.0, help="bridge idle camera-set rate, Hz")
    parser.add_argument("--domain-id", type=int, default=219)
    parser.add_argument("--warmup", type=int, default=3, help="first actions left out of the statistics")
    args = parser.parse_args()

    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    workdir = Path(tempfile.mkdtemp(prefix="bench_policy_"))
    checkpoint = args.checkpoint or make_tiny_checkpoint(workdir / "tiny")

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from mirror.ros.launch_config import child_environment, node_command, node_spec
    from mirror.ros.policy_messages import PolicyActionInfo, PolicyState
    from mirror.ros.topics import POLICY_ACTIONS_TOPIC, POLICY_STATE_TOPIC, events_qos
    from mirror_common.ros.qos import command_qos, latched_qos
    from sim_bridge.ros.instructions import instruction_id
    from sim_bridge.ros.messages import stamp_to_ns, status_from_message

    params = REPO / "config" / "sim.yaml"
    env = child_environment()
    bridge_cmd = node_command(node_spec("sim_bridge"), params, {}) + [
        "-p", "max_steps:=1", "-p", "seed:=-1", "-p", f"publish_rate:={args.publish_rate}",
    ]  # fmt: skip
    policy_cmd = node_command(node_spec("policy"), params, {"checkpoint": str(checkpoint)}) + [
        "-p", f"threads:={args.threads}", "-p", f"coarse_prior:={args.coarse_prior}",
    ]  # fmt: skip
    os.environ.update(env)
    bridge = start(bridge_cmd, workdir / "bridge.log")
    policy = start(policy_cmd, workdir / "policy.log")

    rclpy.init()
    node = rclpy.create_node("bench_policy_latency")
    received: list[tuple[int, int]] = []  # (receive ns, observation stamp ns)
    pending_receive: list[int] = []
    infos: list[PolicyActionInfo] = []
    states: list[PolicyState] = []
    statuses: list = []
    clock = node.get_clock()

    def on_action(_: Float64MultiArray) -> None:
        pending_receive.append(clock.now().nanoseconds)

    def on_target(msg: PoseStamped) -> None:  # published right after the action, same observation
        if pending_receive:
            received.append((pending_receive.pop(0), stamp_to_ns(msg.header.stamp)))

    node.create_subscription(Float64MultiArray, "keyframe_action", on_action, command_qos())
    node.create_subscription(PoseStamped, "target_pose", on_target, command_qos())

    def on_info(msg: String) -> None:
        infos.append(PolicyActionInfo.from_json(msg.data))

    def on_state(msg: String) -> None:
        states.append(PolicyState.from_json(msg.data))

    def on_status(msg: String) -> None:
        statuses.append(status_from_message(msg))

    node.create_subscription(String, POLICY_ACTIONS_TOPIC, on_info, events_qos())
    node.create_subscription(String, POLICY_STATE_TOPIC, on_state, latched_qos())
    node.create_subscription(String, "episode_status", on_status, latched_qos())
    instruction_pub = node.create_publisher(String, "instruction", latched_qos())
    reset = node.create_client(Trigger, "reset_episode")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = True

    def spin() -> None:
        while spinning:
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()

    def wait(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or bridge.poll() is not None or policy.poll() is not None:
                raise SystemExit(f"timed out waiting for {what} (logs in {workdir})")
            time.sleep(0.01)

    try:
        started = time.monotonic()
        wait(lambda: states and states[-1].ready, 300, "the policy")
        wait(lambda: reset.service_is_ready() and statuses, 300, "the bridge")
        print(f"stack up in {time.monotonic() - started:.1f} s; checkpoint {checkpoint}")
        instruction = states[-1].vocabulary[0]
        instruction_pub.publish(String(data=instruction))
        acknowledged = instruction_id(instruction)
        wait(lambda: states[-1].instruction_id == acknowledged, 30, "the instruction acknowledgement")
        for i in range(args.actions):
            before_episode, before_actions = statuses[-1].episode, len(infos)
            node.get_logger().info(f"action {i + 1}/{args.actions}")
            future = reset.call_async(Trigger.Request())  # seed -1: a new layout every episode
            wait(future.done, 120, "reset_episode")
            wait(lambda b=before_episode: statuses[-1].episode > b, 30, "the new episode")
            wait(lambda b=before_actions: len(infos) > b and len(received) > b, 60, "the action")
            wait(lambda: statuses[-1].state in ("success", "failure"), 120, "the episode to end")
    finally:
        spinning = False
        thread.join(5)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        codes = stop(policy), stop(bridge)
    n = min(len(infos), len(received))
    inference = [i.inference_ms for i in infos[:n]]
    publish = [i.latency_ms for i in infos[:n]]
    end_to_end = [(r - s) * 1e-6 for r, s in received[:n]]
    overhead = [e - i for e, i in zip(end_to_end, inference)]
    w = min(args.warmup, n - 1)
    print(f"{n} actions (policy threads: {args.threads or 'torch default'}; exit codes {codes})")
    print(
        f"first action (cold): inference {inference[0]:.1f} ms, observation -> receive {end_to_end[0]:.1f} ms"
    )
    print(f"over the {n - w} actions after {w} warm-up action(s):")
    print(f"policy inference (MirrorAgent.act)       {stats(inference[w:])}")
    print(f"observation -> action published (policy) {stats(publish[w:])}")
    print(f"observation -> keyframe_action received  {stats(end_to_end[w:])}")
    print(f"  minus inference (sync, conversion, DDS) {stats(overhead[w:])}")
    end_to_end = end_to_end[w:]
    verdict = "meets" if np.percentile(end_to_end, 50) < 100.0 else "misses"
    print(f"target < 100 ms (observation -> receive, p50): {verdict}")


if __name__ == "__main__":
    main()

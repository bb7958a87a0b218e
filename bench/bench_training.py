"""Training and inference speed of the joint model.

    .venv/bin/python bench/bench_training.py                      # CPU configs + inference + paper forwards
    .venv/bin/python bench/bench_training.py --skip-paper --batch-size 6 --repeats 5

Prints, for the training config (default config/train_cpu_small.yaml):
  * EE training samples/s: ARP forward + backward + LAMB step on a batch of real simulator observations
    (augmented, as in training);
  * AU training samples/s: ViCLIP forward + backward + AdamW step on 8-frame front-camera clips;
  * the full joint step (EE + alignment + u without gradient; and an AU step), in steps/s and samples/s;
and inference latency of MirrorAgent.act per keyframe (incl. preprocessing of the 4-camera observation) and of
MirrorAgent.recognize per clip, then the forward time of the paper-size ARP and ViCLIP models (batch 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mirror_policy.augmentation import augment_batch  # noqa: E402
from mirror_policy.inference import MirrorAgent  # noqa: E402
from mirror_policy.joint_model import JointModel  # noqa: E402
from mirror_policy.preprocessing import observation_to_sample  # noqa: E402
from mirror_policy.training.config import load_train_config  # noqa: E402
from mirror_policy.training.data import stack_samples  # noqa: E402
from mirror_policy.training.optim import build_optimizers  # noqa: E402
from sim_bridge.bullet.env import BulletBackend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


CPU_SECONDS: dict[str, float] = {}


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1, label: str = "") -> float:
    """Median wall time of ``fn`` in seconds; with ``label``, also record its median process CPU time (all
    threads) in ``CPU_SECONDS``: on a busy machine wall time is inflated, CPU time much less so."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    if label:
        CPU_SECONDS[label] = statistics.median(cpu)
    return statistics.median(times)


def simulator_inputs(count: int) -> tuple[list, list[str], list[np.ndarray]]:
    """Observations, instructions and 8-frame front clips from the embedded simulator."""
    env = BulletBackend()
    observations, instructions, videos = [], [], []
    try:
        for k in range(count):
            info, obs = env.reset("push_buttons", k % 3, k)
            observations.append(obs)
            instructions.append(info.instruction)
            videos.append(np.stack([obs.cameras["front"].rgb] * 8))
    finally:
        env.close()
    return observations, instructions, videos


def bench_training(config_path: Path, batch_size: int, repeats: int) -> None:
    config = load_train_config(config_path, ["data.root=/unused", f"batch_size={batch_size}"])
    torch.manual_seed(0)
    observations, instructions, videos = simulator_inputs(batch_size)
    model = JointModel(config.model_config(sorted(set(instructions)))).train()
    optimizers = build_optimizers(model, config, world_size=1)
    optimizers.set_step(config.optim.warmup_steps, config)
    arp_cfg = model.config.arp
    samples = [observation_to_sample(o, arp_cfg, 0) for o in observations]
    for sample, obs in zip(samples, observations):
        sample["action"] = torch.tensor(np.r_[obs.gripper_pose, 1.0, 0.0], dtype=torch.float32)
    ee = augment_batch(stack_samples(samples), arp_cfg, torch.Generator().manual_seed(0))
    ee["lang"], ee["lang_mask"] = model.language_features(instructions)
    clips = torch.from_numpy(np.stack(videos))
    ids = model.tokenizer(instructions, context_length=model.config.viclip.context_length)
    match = torch.tensor([sorted(set(instructions)).index(s) for s in instructions])

    def ee_step() -> None:
        optimizers.arp.zero_grad()
        loss, _ = model.arp(ee)
        loss.backward()
        optimizers.arp.step()

    def au_step() -> None:
        optimizers.viclip.zero_grad()
        model.viclip(clips, ids, match).loss.backward()
        optimizers.viclip.step()

    def joint_step(with_au: bool) -> None:
        for opt in optimizers.named().values():
            opt.zero_grad()
        loss_ee, info = model.arp(ee)
        if with_au:
            out = model.viclip(clips, ids, match)
            u, loss_au = out.video_features, out.loss
        else:
            with torch.no_grad():
                u = model.viclip.video_features(clips)
            loss_au = 0.0
        align = model.alignment(u, info["e"], instructions)
        (loss_au + config.ee_weight * loss_ee + config.align_weight * align.loss).backward()
        optimizers.arp.step()
        optimizers.alignment.step()
        if with_au:
            optimizers.viclip.step()

    t_ee = timed(ee_step, repeats)
    t_au = timed(au_step, repeats)
    t_joint = timed(lambda: joint_step(False), repeats, label="joint")
    t_joint_au = timed(lambda: joint_step(True), repeats, label="joint_au")
    p = config.au_update_prob
    mean_step = (1 - p) * t_joint + p * t_joint_au
    b = batch_size
    threads = torch.get_num_threads()
    print(
        f"training ({config_path.name}: {model.config.viclip.name} + ARP {arp_cfg.name}, "
        f"batch {b}, {threads} threads)"
    )
    print(f"  EE  ARP fwd+bwd+LAMB          {t_ee * 1e3:8.1f} ms/step  {b / t_ee:7.2f} samples/s")
    print(f"  AU  ViCLIP fwd+bwd+AdamW      {t_au * 1e3:8.1f} ms/step  {b / t_au:7.2f} samples/s")
    print(f"  joint step (no AU update)     {t_joint * 1e3:8.1f} ms/step  {b / t_joint:7.2f} EE samples/s")
    print(f"  joint step (AU update)        {t_joint_au * 1e3:8.1f} ms/step")
    print(f"  mean joint step (AU p={p:.1f})   {mean_step * 1e3:8.1f} ms/step  "
          f"{b / mean_step:7.2f} EE samples/s  {p * b / mean_step:6.2f} AU samples/s")  # fmt: skip
    print(
        f"  -> {config.steps} steps of {config_path.name} ~ {config.steps * mean_step / 60:.1f} min "
        "of training"
    )
    cpu_step = (1 - p) * CPU_SECONDS["joint"] + p * CPU_SECONDS["joint_au"]
    load = os.getloadavg()[0]
    idle_low, idle_high = cpu_step / threads, cpu_step / (0.8 * threads)
    print(f"  process CPU time per mean joint step {cpu_step:.3f} s (all threads; load average {load:.1f}): "
          f"an otherwise idle machine needs about {idle_low:.2f}-{idle_high:.2f} s/step")  # fmt: skip

    agent = MirrorAgent(model.eval())
    obs, instruction = observations[0], instructions[0]
    t_act = timed(lambda: agent.act(obs, instruction, 0), repeats)
    t_pre = timed(lambda: observation_to_sample(obs, arp_cfg, 0), repeats)
    video = np.stack([obs.cameras["front"].rgb] * 100)
    t_rec = timed(lambda: agent.recognize(video), repeats)
    print("inference (batch 1)")
    print(
        f"  MirrorAgent.act per keyframe   {t_act * 1e3:8.1f} ms  (preprocessing {t_pre * 1e3:.1f} ms of it)"
    )
    print(f"  MirrorAgent.recognize per clip {t_rec * 1e3:8.1f} ms  (100-frame video -> 8 frames)")


def report_forward(label: str, model: torch.nn.Module, seconds: dict[str, float]) -> None:
    """One line: the model's size in millions of parameters and each timed pass in milliseconds."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    timings = "  ".join(f"{name} {value * 1e3:8.1f} ms" for name, value in seconds.items())
    print(f"  {label} ({params:.1f} M params)  {timings}")


def bench_paper_arp(repeats: int) -> None:
    from mirror_policy.configuration_arp import ARPConfig
    from mirror_policy.modeling_arp import ARPPolicy

    torch.manual_seed(0)
    cfg = ARPConfig.paper()
    policy = ARPPolicy(cfg).eval()
    n = len(cfg.cameras) * (cfg.camera_resolution // cfg.point_stride) ** 2
    lo, hi = torch.tensor(cfg.scene_bounds[:3]), torch.tensor(cfg.scene_bounds[3:])
    batch = {
        "points": lo + torch.rand(1, n, 3) * (hi - lo),
        "rgb": torch.rand(1, n, 3),
        "low_dim_state": torch.zeros(1, cfg.proprio_dim),
        "lang": torch.randn(1, 77, cfg.lang_dim),
        "lang_mask": torch.ones(1, 77, dtype=torch.bool),
        "action": torch.tensor([[0.2, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]]),
    }
    with torch.no_grad():
        t_tf = timed(lambda: policy(batch), repeats)
    t_dec = timed(lambda: policy.predict_action(batch), repeats)
    report_forward("ARP paper", policy, {"teacher-forced": t_tf, "decode": t_dec})


def bench_paper_viclip(name: str, repeats: int) -> None:
    from mirror_perception.configuration_viclip import get_config
    from mirror_perception.modeling_viclip import ViCLIP

    model = ViCLIP(get_config(name)).eval()
    clip = torch.randn(1, 8, 3, 224, 224)
    ids = torch.zeros(1, 32, dtype=torch.long)
    ids[0, :3] = torch.tensor([49406, 320, 49407])
    with torch.no_grad():
        t_video = timed(lambda: model.encode_video(clip), repeats)
        t_text = timed(lambda: model.encode_text(ids), repeats)
    report_forward(name, model, {"video 8x224^2": t_video, "text": t_text})


def bench_paper(repeats: int, large: bool) -> None:
    print("paper-size forward passes (batch 1, CPU, eval mode)")
    bench_paper_arp(repeats)
    for name in ["ViCLIP-B/16"] + (["ViCLIP-L/14"] if large else []):
        bench_paper_viclip(name, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "train_cpu_small.yaml")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-size forward passes")
    parser.add_argument("--large", action="store_true", help="also time ViCLIP-L/14 (~1.7 GB of weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_training(args.config, args.batch_size, args.repeats)
    if not args.skip_paper:
        bench_paper(max(1, args.repeats // 2), args.large)


if __name__ == "__main__":
    main()

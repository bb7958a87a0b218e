"""Training and inference speed of the mirror model.

    .venv/bin/python bench/bench_training.py                      # CPU configs + inference + paper forwards
    .venv/bin/python bench/bench_training.py --skip-paper --batch-size 6 --repeats 5

Prints, for the training config (default config/train_cpu_small.yaml) on its thread count, once in fp32 and
once in bf16 (autocast, ``precision: bf16``), the two timed alternately so that machine load hits both alike:
  * EE training samples/s: ARP forward + backward + LAMB step on a batch of real simulator observations
    (augmented, as in training);
  * AU training samples/s: ViCLIP forward + backward + AdamW step on 8-frame front-camera clips;
  * the full joint step (EE + alignment + u without gradient, computed on a second thread as train_joint
    does; and an AU step), in steps/s and samples/s;
  * the bf16 / fp32 ratio of the mean joint step (EE samples/s);
and inference latency of MirrorAgent.act per keyframe (incl. preprocessing of the 4-camera observation) and of
MirrorAgent.recognize per clip, then the forward time of the paper-size ARP and ViCLIP models (batch 1).
First it prints the host's fp32 and bf16 matmul rates: bf16 autocast only pays where the second is higher.

    .venv/bin/python bench/bench_training.py --device cuda --config config/train_paper.yaml
    .venv/bin/python bench/bench_training.py --device cpu --config config/train_paper.yaml --warmup 0 \
        --steps 1 --set batch_size=2 --set precision=bf16 --set viclip.activation_checkpointing=true \
        --set arp.activation_checkpointing=true

With ``--device`` the joint step of the config (its models, batch size and precision; fp16 with a loss scale)
runs on that device on synthetic inputs of the config's shapes (no simulator needed: GPU machines may lack
PyBullet) and prints the steady-state step time after warm-up, samples/s, the peak memory and the projected
time of the config's steps. The peak is the device's allocator peak on CUDA; on the CPU it is the process's
peak resident memory and its growth over the timed steps (with ``--warmup 0``: gradients, optimizer states and
the step's activations), which is how activation checkpointing's saving shows without a GPU. ``--set``
overrides the config as ``train_joint --set`` does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mirror.agent import MirrorAgent  # noqa: E402
from mirror.model import MirrorModel  # noqa: E402
from mirror.precision import precision_autocast  # noqa: E402
from mirror.training.config import TrainConfig, load_train_config  # noqa: E402
from mirror.training.data import stack_samples  # noqa: E402
from mirror.training.optim import build_optimizers  # noqa: E402
from mirror.training.trainer import VideoFeatureThread  # noqa: E402
from mirror_policy.arp.augmentation import augment_batch  # noqa: E402
from mirror_policy.arp.preprocessing import observation_to_sample  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


CPU_SECONDS: dict[str, float] = {}
# Every run times both, interleaved: fp32 is the reference, bf16 what `precision: bf16` trains with.
COMPARED_PRECISIONS = ("fp32", "bf16")
PRECISION_NOTES = {"bf16": " (autocast: bf16 matmuls / convolutions; float32 weights, renderer and losses)"}


def timed_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time in seconds of each of ``fns``, run round-robin (A, B, A, B, ...) so that a change of
    load on a shared machine hits every variant alike; each one's median process CPU time (all threads) goes
    into ``CPU_SECONDS`` under its key: on a busy machine wall time is inflated, CPU time much less so."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {key: [] for key in fns}
    cpu: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    CPU_SECONDS.update({key: statistics.median(values) for key, values in cpu.items()})
    return {key: statistics.median(values) for key, values in wall.items()}


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    seconds = timed_interleaved({"_": fn}, repeats, warmup)["_"]
    CPU_SECONDS.pop("_")
    return seconds


def simulator_inputs(count: int) -> tuple[list, list[str], list[np.ndarray]]:
    """Observations, instructions and 8-frame front clips from the embedded simulator."""
    from sim_bridge.bullet.env import BulletBackend

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


def bench_gemm(repeats: int) -> None:
    """fp32 and bf16 matmul rates at ARP cpu_tiny's shape: whether ``precision: bf16`` can pay off here.

    Why: bf16 autocast is only faster where the CPU's bf16 GEMM kernels beat float32 ones (avx512_bf16 or
    AMX), and that differs between hosts of the same instance type; on some it runs at half the fp32 rate.
    """
    m, k, n = 1260, 128, 512  # ARP cpu_tiny's most frequent product: (tokens, width) x (width, 4 width)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        rates[dtype] = 2 * m * k * n / timed(lambda a=a, b=b: [a @ b for _ in range(20)], repeats) * 20 / 1e9
    fp32, bf16 = rates[torch.float32], rates[torch.bfloat16]
    print(f"GEMM {m}x{k}x{n}, {torch.get_num_threads()} threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} "
          f"GFLOP/s (x{bf16 / fp32:.2f}; below 1, bf16 autocast slows training on this host)")  # fmt: skip


def bench_training(config_path: Path, config: TrainConfig, repeats: int) -> None:
    batch_size = config.batch_size
    torch.manual_seed(0)
    observations, instructions, videos = simulator_inputs(batch_size)
    model = MirrorModel(config.model_config(sorted(set(instructions)))).train()
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
    device = torch.device("cpu")
    video_thread = VideoFeatureThread()

    def ee_step(precision: str) -> None:
        optimizers.arp.zero_grad()
        with precision_autocast(precision, device):
            loss, _ = model.arp(ee)
        loss.backward()
        optimizers.arp.step()

    def au_step(precision: str) -> None:
        optimizers.viclip.zero_grad()
        with precision_autocast(precision, device):
            loss = model.viclip(clips, ids, match).loss
        loss.backward()
        optimizers.viclip.step()

    def joint_step(precision: str, with_au: bool) -> None:
        """As MirrorTrainer.train_step: u of a non-AU step on the second thread, the alignment in float32."""
        for opt in optimizers.named().values():
            opt.zero_grad()
        video_rng = torch.Generator().manual_seed(0)
        pending = None if with_au else video_thread.submit(model.viclip, clips, precision, device, video_rng)
        with precision_autocast(precision, device):
            loss_ee, info = model.arp(ee)
            if with_au:
                out = model.viclip(clips, ids, match, generator=video_rng)
                u, loss_au = out.video_features.float(), out.loss
            else:
                u, loss_au = pending.result(), 0.0
        align = model.alignment(u, info["e"].float(), instructions)
        (loss_au + config.ee_weight * loss_ee + config.align_weight * align.loss).backward()
        optimizers.arp.step()
        optimizers.alignment.step()
        if with_au:
            optimizers.viclip.step()

    steps = {
        "ee": ee_step,
        "au": au_step,
        "joint": lambda precision: joint_step(precision, False),
        "joint_au": lambda precision: joint_step(precision, True),
    }
    fns = {f"{p}/{name}": partial(step, p) for name, step in steps.items() for p in COMPARED_PRECISIONS}
    t = timed_interleaved(fns, repeats)
    p = config.au_update_prob
    b = batch_size
    threads = torch.get_num_threads()
    print(
        f"training ({config_path.name}: {model.config.viclip.name} + ARP {arp_cfg.name}, "
        f"batch {b}, {threads} threads; {' and '.join(COMPARED_PRECISIONS)} steps timed alternately)"
    )
    mean_step, load = {}, os.getloadavg()[0]
    for precision in COMPARED_PRECISIONS:
        t_ee, t_au, t_joint, t_joint_au = (t[f"{precision}/{name}"] for name in steps)
        mean_step[precision] = (1 - p) * t_joint + p * t_joint_au
        print(f" {precision}{PRECISION_NOTES.get(precision, '')}")
        print(f"  EE  ARP fwd+bwd+LAMB          {t_ee * 1e3:8.1f} ms/step  {b / t_ee:7.2f} samples/s")
        print(f"  AU  ViCLIP fwd+bwd+AdamW      {t_au * 1e3:8.1f} ms/step  {b / t_au:7.2f} samples/s")
        print(
            f"  joint step (no AU update)     {t_joint * 1e3:8.1f} ms/step  {b / t_joint:7.2f} EE samples/s"
        )
        print(f"  joint step (AU update)        {t_joint_au * 1e3:8.1f} ms/step")
        m = mean_step[precision]
        print(f"  mean joint step (AU p={p:.1f})   {m * 1e3:8.1f} ms/step  "
              f"{b / m:7.2f} EE samples/s  {p * b / m:6.2f} AU samples/s")  # fmt: skip
        cpu_step = (1 - p) * CPU_SECONDS[f"{precision}/joint"] + p * CPU_SECONDS[f"{precision}/joint_au"]
        idle_low, idle_high = cpu_step / threads, cpu_step / (0.8 * threads)
        print(
            f"  process CPU time per mean joint step {cpu_step:.3f} s (all threads; load average "
            f"{load:.1f}): an otherwise idle machine needs about {idle_low:.2f}-{idle_high:.2f} s/step"
        )
    base, new = COMPARED_PRECISIONS
    speedup = mean_step[base] / mean_step[new]
    print(
        f" {new} vs {base}: mean joint step {mean_step[base] * 1e3:.1f} -> {mean_step[new] * 1e3:.1f} ms, "
        f"{b / mean_step[base]:.2f} -> {b / mean_step[new]:.2f} EE samples/s: x{speedup:.2f}"
    )
    run_step = mean_step["bf16" if config.precision == "bf16" else "fp32"]
    print(
        f"  -> {config.steps} steps of {config_path.name} (precision {config.precision}) ~ "
        f"{config.steps * run_step / 60:.1f} min of training"
    )

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


def synthetic_step_inputs(
    model: MirrorModel, batch_size: int, device: torch.device, seed: int = 0
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``(ee batch, clips, token ids, match ids, instructions)`` with the shapes a real batch of the model's
    config has: every camera's points at its resolution and stride inside the scene bounds, 8-frame uint8
    clips at RLBench's 128^2, the model's own instructions."""
    generator = torch.Generator().manual_seed(seed)
    arp = model.config.arp
    points = len(arp.cameras) * (arp.camera_resolution // arp.point_stride) ** 2
    lo, hi = torch.tensor(arp.scene_bounds[:3]), torch.tensor(arp.scene_bounds[3:])
    quaternion = torch.randn(batch_size, 4, generator=generator)
    instructions = [model.config.instructions[i % len(model.config.instructions)] for i in range(batch_size)]
    lang, lang_mask = model.language_features(instructions)
    ee = {
        "points": lo + torch.rand(batch_size, points, 3, generator=generator) * (hi - lo),
        "rgb": torch.rand(batch_size, points, 3, generator=generator),
        "low_dim_state": torch.zeros(batch_size, arp.proprio_dim),
        "lang": lang,
        "lang_mask": lang_mask,
        "action": torch.cat(
            [
                lo + torch.rand(batch_size, 3, generator=generator) * (hi - lo),
                quaternion / quaternion.norm(dim=-1, keepdim=True),
                torch.ones(batch_size, 1),
                torch.zeros(batch_size, 1),
            ],
            dim=-1,
        ),
    }
    clips = torch.randint(0, 256, (batch_size, 8, 128, 128, 3), generator=generator, dtype=torch.uint8)
    ids = model.tokenizer(instructions, context_length=model.config.viclip.context_length)
    match = torch.tensor([sorted(set(instructions)).index(s) for s in instructions])
    moved = {k: v.to(device) for k, v in ee.items()}
    return moved, clips.to(device), ids.to(device), match.to(device), instructions


def bench_device(
    config_path: Path, config: TrainConfig, device: torch.device, steps: int, warmup: int
) -> dict:
    """Steady-state joint steps of ``config`` on ``device`` (module docstring); returns the figures."""
    torch.manual_seed(0)
    vocabulary = [f"instruction {i}" for i in range(16)]
    model = MirrorModel(config.model_config(vocabulary)).to(device).train()
    optimizers = build_optimizers(model, config, world_size=1)
    optimizers.set_step(config.optim.warmup_steps, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    ee, clips, ids, match, instructions = synthetic_step_inputs(model, config.batch_size, device)
    au_every = max(1, round(1 / config.au_update_prob)) if config.au_update_prob > 0 else 0

    def step(index: int) -> None:
        with_au = bool(au_every) and index % au_every == 0
        for opt in optimizers.named().values():
            opt.zero_grad(set_to_none=True)
        with precision_autocast(config.precision, device):
            loss_ee, info = model.arp(ee)
            out = model.viclip(clips, ids, match) if with_au else None
        if out is None:
            with torch.no_grad(), precision_autocast(config.precision, device):
                u = model.viclip.video_features(clips).float()
            loss_au = 0.0
        else:
            u, loss_au = out.video_features.float(), out.loss
        align = model.alignment(u, info["e"].float(), instructions)
        scaler.scale(loss_au + config.ee_weight * loss_ee + config.align_weight * align.loss).backward()
        for opt in [optimizers.arp, optimizers.alignment] + ([optimizers.viclip] if with_au else []):
            scaler.step(opt)
        scaler.update()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for index in range(warmup):
        step(index)
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    resident_before = peak_resident_gib()
    start = time.perf_counter()
    for index in range(warmup, warmup + steps):
        step(index)
    synchronize()
    seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        memory = f"  peak device memory {peak:.1f} GiB"
    else:
        peak = peak_resident_gib()
        grown = peak - resident_before
        memory = f"  peak resident memory {peak:.2f} GiB, {grown:.2f} GiB of it in the timed steps"
    figures = {
        "step_s": seconds,
        "samples_per_s": config.batch_size / seconds,
        "peak_memory_gib": peak,
        "projected_hours": config.steps * seconds / 3600,
    }
    print(
        f"{config_path.name} on {device} ({model.config.viclip.name} + ARP {model.config.arp.name}, batch "
        f"{config.batch_size}, precision {config.precision}, AU every {au_every or 'never'} steps), "
        f"{steps} steps after {warmup} warm-up"
    )
    print(f"  joint step {seconds * 1e3:.1f} ms  ({figures['samples_per_s']:.1f} samples/s)")
    print(memory)
    print(f"  -> {config.steps} steps ~ {figures['projected_hours']:.1f} h on one device")
    return figures


def peak_resident_gib() -> float:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report_forward(label: str, model: torch.nn.Module, seconds: dict[str, float]) -> None:
    """One line: the model's size in millions of parameters and each timed pass in milliseconds."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    timings = "  ".join(f"{name} {value * 1e3:8.1f} ms" for name, value in seconds.items())
    print(f"  {label} ({params:.1f} M params)  {timings}")


def bench_paper_arp(repeats: int) -> None:
    from mirror_policy.arp.configuration import ARPConfig
    from mirror_policy.arp.modeling import ARPPolicy

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
    parser.add_argument("--threads", type=int, help="torch threads (default: the config's, else 2)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-size forward passes")
    parser.add_argument("--large", action="store_true", help="also time ViCLIP-L/14 (~1.7 GB of weights)")
    parser.add_argument(
        "--device", help="time the config's joint step on this device (e.g. cuda), synthetic data"
    )
    parser.add_argument("--steps", type=int, default=20, help="--device: timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="--device: untimed steps first")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override, as train_joint --set (e.g. viclip.activation_checkpointing=true); repeatable",
    )  # fmt: skip
    args = parser.parse_args()
    if args.device:
        config = load_train_config(args.config, ["data.root=/unused", *args.overrides])
        bench_device(args.config, config, torch.device(args.device), args.steps, args.warmup)
        return
    config = load_train_config(
        args.config, ["data.root=/unused", f"batch_size={args.batch_size}", *args.overrides]
    )
    torch.set_num_threads(args.threads or config.threads or 2)
    bench_gemm(args.repeats)
    bench_training(args.config, config, args.repeats)
    if not args.skip_paper:
        bench_paper(max(1, args.repeats // 2), args.large)


if __name__ == "__main__":
    main()

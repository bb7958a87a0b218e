"""``train_joint``: joint training of ViCLIP (action understanding) and ARP (embodied execution) with the
mirror alignment, on an RLBench/PerAct-layout dataset.

    train_joint --config config/train_cpu_small.yaml --data data/train --out runs/mirror
    train_joint --config config/train_cpu_small.yaml --data data/train --out runs/baseline --align-weight 0
    train_joint --resume runs/mirror            # continue exactly where the last checkpoint left off
    train_joint --config config/train_cpu_small.yaml --data data/train --out runs/probe --probe \\
        --init runs/baseline/final                  # alignment probing of frozen models
    torchrun --nproc_per_node 2 -m mirror.training.train_joint --config config/train_paper.yaml ...

Settings come from the defaults, then ``--config`` (YAML or JSON), then ``--set key.path=value`` overrides
(e.g. ``--set arp.cross_layers=2 --set optim.video_lr=1e-4``), then the flags below. ``--resume`` without
``--config`` reuses the run's own ``train_config.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP: spinning threads hurt

from mirror.training.config import TrainConfigError, load_train_config  # noqa: E402
from mirror.training.distributed import setup_distributed, teardown  # noqa: E402
from mirror.training.run_directory import TRAIN_LOG_NAME, latest_checkpoint, run_dir_of  # noqa: E402
from mirror.training.trainer import MirrorTrainer  # noqa: E402
from mirror_common.cli import console_main
from mirror_common.errors import MirrorError

log = logging.getLogger("train_joint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_joint",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML/JSON training config (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="dotted override"
    )
    parser.add_argument("--data", help="dataset root (RLBench/PerAct layout) = data.root")
    parser.add_argument("--out", help="run directory = out")
    parser.add_argument("--steps", type=int, help="total optimisation steps")
    parser.add_argument("--seed", type=int, help="seed of data order, model init and augmentation")
    parser.add_argument("--batch-size", type=int, help="pairs per process and step")
    parser.add_argument("--align-weight", type=float, help="lambda_align; 0 = the no-mirror baseline")
    parser.add_argument("--resume", type=Path, help="run directory (or checkpoint) to continue")
    parser.add_argument(
        "--probe", action="store_true", default=None, help="train only T_u / T_e (frozen models)"
    )
    parser.add_argument(
        "--init", help="MirrorModel checkpoint whose weights start the run (e.g. for --probe)"
    )
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def resolve_config(args: argparse.Namespace):
    """Defaults <- file <- --set <- flags; a bare --resume reads the run's own config."""
    config_path = args.config
    overrides = list(args.overrides)
    if config_path is None and args.resume is not None:
        run_config = run_dir_of(latest_checkpoint(args.resume)) / "train_config.json"
        if run_config.is_file():
            config_path = run_config
            overrides.insert(0, "stop_after=0")  # an earlier invocation's stop point is not this one's
    flags = {
        "data.root": args.data,
        "out": args.out,
        "steps": args.steps,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "align_weight": args.align_weight,
        "probe": args.probe,
        "init": args.init,
        "device": args.device,
        "progress": False if args.no_progress else None,
    }
    config = load_train_config(config_path, overrides, flags)
    if args.resume is not None:
        run_dir = run_dir_of(latest_checkpoint(args.resume))
        if args.out is not None and Path(args.out).resolve() != run_dir:
            raise TrainConfigError(f"--out {args.out} differs from the resumed run directory {run_dir}")
        if Path(config.out).resolve() != run_dir:  # else keep the run's own (relative) spelling
            config.out = str(run_dir)
    return config


@console_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve_config(args)
        dist = setup_distributed(config.device)
    except (MirrorError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    file_handler = None
    try:
        trainer = MirrorTrainer(config, dist, resume=args.resume)
        if dist.is_main:
            file_handler = logging.FileHandler(trainer.run_dir / TRAIN_LOG_NAME)
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(file_handler)
            log.info("run directory %s; %d train / %d held-out episodes, %d EE transitions, vocabulary of %d",
                     trainer.run_dir, len(trainer.train_entries), len(trainer.held_out),
                     len(trainer.train_transitions), len(trainer.model.config.instructions))  # fmt: skip
        metrics = trainer.run()
        if dist.is_main and metrics:
            log.info("final evaluation: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    except MirrorError as exc:  # bad data, a corrupt --init / --resume checkpoint, a bad setting
        log.error("%s", exc)
        return 2
    finally:
        if file_handler is not None:  # a caller running several trainings in one process (mirror_study)
            logging.getLogger().removeHandler(file_handler)
            file_handler.close()
        teardown(dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())

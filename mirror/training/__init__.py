"""Joint training of ViCLIP and ARP with the mirror alignment (``train_joint``).

Modules: ``config`` (typed settings, YAML + overrides), ``data`` (samples and paired batches from an
RLBench-layout dataset), ``lamb`` and ``optim`` (optimizers and schedule), ``run_directory`` (run directory,
exact resume), ``distributed`` (torchrun), ``trainer`` (the loop) and ``train_joint`` (the command).
"""

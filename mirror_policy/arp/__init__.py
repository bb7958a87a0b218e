"""ARP (autoregressive policy) on RVT-2's multi-view transformer.

``configuration`` (hyper-parameters, presets), ``preprocessing`` (observations to a batch), ``renderer``
(point cloud to orthographic virtual views), ``mvt`` (the multi-view transformer), ``action_tokens``
(rotation bins, gripper and collision tokens), ``modeling`` (the policy) and ``augmentation`` (training-time
SE(3) and colour noise). Submodules are imported explicitly, so light users do not pay for torch."""

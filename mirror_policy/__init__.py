"""The policy layer: ARP, the autoregressive keyframe policy (:mod:`mirror_policy.arp`).

It sees observations and language features and predicts keyframe actions; it knows nothing of ViCLIP, the
mirror alignment or ROS 2 (those are the system layer, :mod:`mirror`)."""

"""Mirror policy package: the ARP keyframe policy (``configuration_arp``, ``renderer``, ``modeling_mvt``,
``modeling_arp``, ``action_tokens``, ``preprocessing``, ``augmentation``), the mirror alignment and the ROS 2
policy node. Submodules are imported explicitly so that light users (e.g. the node's parameter parsing)
do not pay for importing torch."""

"""The system layer: the mirror model and everything built on it.

``model`` (:class:`~mirror.model.MirrorModel`: ViCLIP + ARP + the mirror alignment heads, one checkpoint),
``alignment`` (the alignment loss and heads), ``agent`` (:class:`~mirror.agent.MirrorAgent`: recognise and
act), ``training`` (``train_joint``), ``evaluation`` (``evaluate``, studies) and ``ros`` (the policy and
perception nodes, the mirror loop and ``mirror_bringup``). It may import every layer below it; nothing imports
it."""

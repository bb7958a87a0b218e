"""The base layer: what every other package shares and nothing in it knows about robots or models.

``serialization`` (JSON configs, atomic writes), ``errors`` (the error types more than one layer raises),
``outputs`` (output directories checked before slow work) and ``ros`` (every node's ``main`` and the QoS of
every stream). It imports no other package of this repository.
"""

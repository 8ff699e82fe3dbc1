"""The ``redis`` sink: streams, routed streams, pub/sub or a mirror hash, exactly once.

docs/redis.md is the operator's view. Only this package imports ``redis``. Modules:

- ``sink``: ``RedisSink``, the ``bridge.sink`` contract, and why it is exactly once;
- ``lua``: the scripts that write a chunk and its position in one atomic call;
- ``settings``: ``BRIDGE_REDIS__*``.
"""

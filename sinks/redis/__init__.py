"""The ``redis`` sink: streams, routed streams, pub/sub or a mirror hash, exactly once.

docs/redis.md is the operator's view. Only this package imports ``redis``. Modules:

- ``sink``: ``RedisSink``, the ``bridge.sink`` contract, and why it is exactly once;
- ``lua``: the scripts that write a chunk and its position in one atomic call;
- ``client``: connecting, the checkpoint's key, Redis's refusals as one line;
- ``reader``: what each mode holds, read back (``bridge.reader``);
- ``settings``: ``BRIDGE_REDIS__*``.
"""

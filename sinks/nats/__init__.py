"""The ``nats`` sink: one JetStream message per event, exactly once, fenced against a second
writer by the server's expected-last-sequence check.

docs/nats.md is the operator's view (settings, message layout, the guarantee per HA case, a
consumer); the modules' docstrings say why the code looks like this. Only ``connection``,
``publisher`` and ``reader`` import nats-py. Each module has one job:

- ``sink``: ``NatsSink``, the ``bridge.sink`` contract, and why it is exactly once;
- ``settings``: ``BRIDGE_NATS__*``;
- ``subjects``: what a subject may hold, the subject of each event, the stream's filter;
- ``messages``: a message's headers, id and size, and a message read back as its event;
- ``connection``: connecting, the stream, the tail, and nats-py's errors as the pump's;
- ``publisher``: one session's chain of conditional publishes and their acknowledgements;
- ``reader``: ``NatsReader``, the pipeline's events read back, for verify and consumers;
- ``loop``: the asyncio loop on its own thread behind the synchronous contract.
"""

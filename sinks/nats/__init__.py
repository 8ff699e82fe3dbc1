"""The ``nats`` sink: one JetStream message per event, exactly once, fenced against a second
writer by the server's expected-last-sequence check.

docs/nats.md is the operator's view (settings, message layout, the guarantee per HA case, a
consumer); the modules' docstrings say why the code looks like this. Only ``connection`` and
``publisher`` import nats-py. Each module has one job:

- ``sink``: ``NatsSink``, the ``bridge.sink`` contract, and why it is exactly once;
- ``settings``: ``BRIDGE_NATS__*``;
- ``subjects``: what a subject may hold, the subject of each event, the stream's filter;
- ``messages``: a message's headers, id and size, and the stream's last message read back;
- ``connection``: connecting, the stream, the tail, and nats-py's errors as the pump's;
- ``publisher``: one session's chain of conditional publishes and their acknowledgements;
- ``loop``: the asyncio loop on its own thread behind the synchronous contract.
"""

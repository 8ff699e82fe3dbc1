"""The ``postgres`` sink: a changelog table or a mirror table, exactly once.

docs/postgres.md is the operator's view. Only this package imports ``psycopg``. Modules:

- ``sink``: ``PostgresSink``, the ``bridge.sink`` contract, one transaction per flush;
- ``schema``: the tables and every statement run on them;
- ``rows``: events as rows, with their text and JSONB views;
- ``settings``: ``BRIDGE_POSTGRES__*``.
"""

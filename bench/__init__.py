"""Benchmarks of etcd-bridge: one command per measurement (see BENCHMARKS.md).

``python -m bench.keepup``, ``bench.burst``, ``bench.snapshot``, ``bench.latency`` and
``bench.profile`` each start their own servers, run the bridge as an operator does
(``python -m bridge run``, configured by ``BRIDGE_*`` variables), read what reached each sink
back from the sink itself, and print their figures beside a baseline measured in the same run.
They are not tests: nothing here asserts a timing.
"""

"""Sinks: where the normalized events of etcd-bridge go. See ``bridge.sink`` for the contract."""

"""Sinks: where the normalized events of etcd-bridge go. See ``sinks.base`` for the contract."""

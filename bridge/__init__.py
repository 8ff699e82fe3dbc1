"""etcd-bridge: stream the changes of an etcd v3 key prefix to sinks, exactly once per sink."""

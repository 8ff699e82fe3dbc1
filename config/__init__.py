"""Configuration of etcd-bridge: pydantic-settings models read from ``BRIDGE_*`` variables."""

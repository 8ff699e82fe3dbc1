"""The ``redis`` sink (``BRIDGE_REDIS__*``)."""

from pydantic import BaseModel, Field


class RedisSettings(BaseModel):
    """Where the Redis sink writes to."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    stream: str = Field(default="etcd-bridge", description="Stream the events are added to.")

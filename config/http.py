"""The health and metrics HTTP endpoint (``BRIDGE_HTTP__*``)."""

from pydantic import BaseModel, Field


class HttpSettings(BaseModel):
    """Where ``/healthz``, ``/readyz`` and ``/metrics`` are served."""

    enabled: bool = Field(default=True, description="Serve the endpoint at all.")
    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port).")

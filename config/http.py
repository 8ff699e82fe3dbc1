"""The health, metrics and admin HTTP endpoint (``BRIDGE_HTTP__*``)."""

from pydantic import BaseModel, Field, SecretStr


class HttpSettings(BaseModel):
    """Where ``/healthz``, ``/readyz``, ``/metrics``, ``/positions`` and the admin endpoints
    are served."""

    enabled: bool = Field(default=True, description="Serve the endpoint at all.")
    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port).")
    admin_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Bearer token the admin endpoints (POST /resnapshot) require; unset: they "
        "are off. At least 16 characters.",
    )

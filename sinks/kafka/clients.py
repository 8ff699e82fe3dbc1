"""The sink's librdkafka clients (producer, tail reader, admin), built from one configuration,
with property values kept out of every log line and error.

Every value of ``BRIDGE_KAFKA__PROPERTIES`` is treated as a secret: we cannot know which of an
open set of properties are. librdkafka quotes values in some of its own messages (a CONFWARN
does, and so does a refused configuration), so its log lines go through the
``sinks.kafka.librdkafka`` logger, whose filter masks them, and our errors scrub them too.
"""

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from config.errors import ConfigError
from sinks.kafka.settings import KafkaSettings

C = TypeVar("C")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _ScrubSecrets(logging.Filter):
    """librdkafka's own log lines may quote property values (a CONFWARN does): mask them."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


_SCRUBBER = _ScrubSecrets()
librdkafka_log = logging.getLogger(f"{__package__}.librdkafka")
"""Where librdkafka's own log lines go, property values masked."""
librdkafka_log.addFilter(_SCRUBBER)


class Clients:
    """Builds the sink's librdkafka clients: the pass-through properties, then what the client
    needs, then what the bridge never lets a property override (servers, error callback,
    logger)."""

    def __init__(
        self, settings: KafkaSettings, *, servers: str, on_error: Callable[[KafkaError], None]
    ) -> None:
        self.settings = settings
        self.servers = servers
        self._on_error = on_error
        self._secrets = {v for v in settings.client_properties().values() if len(v) >= 3}
        _SCRUBBER.secrets.update(self._secrets)

    def new(self, kind: Callable[[dict[str, Any]], C], extra: dict[str, Any]) -> C:
        configuration: dict[str, Any] = {
            **self.settings.client_properties(),
            **extra,
            "bootstrap.servers": self.servers,
            "error_cb": self._on_error,
            "logger": librdkafka_log,
        }
        try:
            return kind(configuration)
        except (KafkaException, ValueError, TypeError) as error:
            # librdkafka's message may quote a property value: only the scrubbed one is kept.
            raise ConfigError(
                f"BRIDGE_KAFKA__PROPERTIES: librdkafka refused the configuration: "
                f"{self.scrub(str(error))}"
            ) from None

    def scrub(self, text: str) -> str:
        """librdkafka quotes bad values in its messages: never let a property value through."""
        return scrub(text, self._secrets)

"""What a pipeline does with an event its sink refuses for good (``BRIDGE_<NAME>__ON_REFUSED``).

Chosen per sink, because one destination may afford a gap (a cache fed through Redis) while
another must hold every change or stop (an audit log in Kafka). The core adds
``RefusalSettings``' fields to every sink's own section, as it does the output format's, so a
third-party sink gets them the same way as ours; ``bridge.refusal`` applies them.
"""

import enum
from pathlib import Path

from pydantic import BaseModel, Field


class RefusalPolicy(enum.StrEnum):
    """What happens to an event a sink refuses for good (docs/operating.md)."""

    STOP = "stop"
    """The pipeline stops before it, as with any fatal error."""
    OMIT_VALUE = "omit_value"
    """It is delivered without its value and previous value, marked with their sizes."""
    DEAD_LETTER = "dead_letter"
    """It is appended to the dead-letter file, and the pipeline goes on with the next one."""


class RefusalSettings(BaseModel):
    """The refusal fields every sink's section has besides its own."""

    on_refused: RefusalPolicy = Field(
        default=RefusalPolicy.STOP,
        description="What to do with an event the sink refuses for good (too large for it): "
        "stop (the pipeline stops before it), omit_value (deliver it without its value and "
        "previous value, marked with their sizes in bytes, for consumers to read from etcd) "
        "or dead_letter (append it to DEAD_LETTER_PATH and go on). A refusal that is not about "
        "one event (a permission) always stops.",
    )
    dead_letter_path: Path | None = Field(
        default=None,
        description="With on_refused=dead_letter: the JSON-lines file (native events, fsynced) "
        "the refused events go to, each once; one file per sink.",
    )

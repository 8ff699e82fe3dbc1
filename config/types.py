"""Field types shared by the settings models.

``CommaList`` exists because an operator writes ``BRIDGE_SINKS=file,kafka``, not JSON:
pydantic-settings would JSON-decode a list-typed variable, so the field opts out of that
(``NoDecode``) and splits on commas itself.
"""

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def _split_commas(raw: Any) -> Any:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list given as ``a,b,c`` in the environment; blanks around items are ignored."""

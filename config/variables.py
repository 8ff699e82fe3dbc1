"""The ``BRIDGE_*`` variables a set of settings models accepts: listed, shown, and checked.

pydantic-settings silently ignores a variable that matches no field, so ``BRIDGE_SINK=kafka``
(missing S) or ``BRIDGE_ETCD__ENDPOINT=...`` would leave the bridge on its defaults, writing to
stdout from 127.0.0.1:2379: a typo must never change where data goes. ``unknown_variables``
therefore compares every ``BRIDGE_*`` name set (environment and ``.env``) with the names the
models accept, and names the nearest valid one. The same enumeration feeds
``etcd-bridge settings`` and the documentation test, so the three never disagree.
"""

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from config.settings import ENV_PREFIX, NESTED_DELIMITER


@dataclass(frozen=True, slots=True)
class Variable:
    """One accepted variable, from one model field."""

    name: str
    field: FieldInfo
    open_ended: bool
    """A mapping field (pass-through properties): ``<name>__<ANY>`` is accepted too."""

    @property
    def secret(self) -> bool:
        return _mentions(self.field.annotation, SecretStr)

    @property
    def default(self) -> str:
        """The default as an operator would write it, or ``(required)``."""
        if self.field.is_required():
            return "(required)"
        value = self.field.get_default(call_default_factory=True)
        if value is None or value == {}:
            return "(unset)"
        if isinstance(value, list):
            return ",".join(str(item) for item in value) or "(empty)"
        if isinstance(value, SecretStr):  # a default is in the code, public by definition
            return value.get_secret_value()
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def shown(self, value: str) -> str:
        """``value`` as ``etcd-bridge settings`` may print it: secrets masked."""
        return "**********" if self.secret else value


def variables(model: type[BaseModel], prefix: str) -> list[Variable]:
    """Every variable of ``model`` whose names start with ``prefix`` (e.g. ``BRIDGE_KAFKA__``),
    nested models flattened with ``__``."""
    found: list[Variable] = []
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += variables(annotation, name + NESTED_DELIMITER)
        else:
            open_ended = typing.get_origin(annotation) in (dict, Mapping)
            found.append(Variable(name=name, field=field, open_ended=open_ended))
    return found


def section_prefix(name: str) -> str:
    """``kafka`` -> ``BRIDGE_KAFKA__``: where a sink's own variables live."""
    return f"{ENV_PREFIX}{name.upper()}{NESTED_DELIMITER}"


def set_variables(environ: Mapping[str, str], *, dotenv: Path = Path(".env")) -> dict[str, str]:
    """Every ``BRIDGE_*`` variable set, upper-cased as pydantic-settings matches them; the
    environment wins over ``.env`` as it does there."""
    found: dict[str, str] = {}
    if dotenv.is_file():
        for name, value in dotenv_values(dotenv).items():
            found[name.upper()] = value or ""
    for name, value in environ.items():
        found[name.upper()] = value
    return {name: value for name, value in found.items() if name.startswith(ENV_PREFIX)}


def unknown_variables(
    names: Iterable[str], *, known: Iterable[Variable], open_prefixes: Iterable[str] = ()
) -> list[str]:
    """One line per name that no variable accepts, with the nearest valid name when there is
    one. ``open_prefixes`` are accepted whole (a sink that could not be loaded to list its
    variables: selecting it fails with its own error)."""
    accepted = list(known)
    exact = {variable.name for variable in accepted}
    open_ended = tuple(v.name + NESTED_DELIMITER for v in accepted if v.open_ended)
    open_ended += tuple(open_prefixes)
    problems = []
    for name in sorted(names):
        if name in exact or name.startswith(open_ended):
            continue
        nearest = difflib.get_close_matches(name, exact, n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]}?" if nearest else "`etcd-bridge settings` lists them"
        problems.append(f"{name}: unknown variable; {hint}")
    return problems


def _mentions(annotation: Any, wanted: type) -> bool:
    """Whether ``wanted`` appears anywhere in a type annotation (``SecretStr | None``,
    ``dict[str, SecretStr]``)."""
    if annotation is wanted:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return any(_mentions(argument, wanted) for argument in typing.get_args(annotation))
    return False

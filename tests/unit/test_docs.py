"""The README documents every setting, so adding one without documenting it fails here."""

from pathlib import Path

from pydantic import BaseModel

from config.settings import ENV_PREFIX, NESTED_DELIMITER, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def variables(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += variables(annotation, f"{prefix}{field_name.upper()}{NESTED_DELIMITER}")
        else:
            names.append(f"{prefix}{field_name.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    documentation = README.read_text() + "".join(
        path.read_text() for path in sorted(DOCS.glob("*.md"))
    )
    missing = [name for name in variables(Settings, ENV_PREFIX) if f"`{name}`" not in documentation]
    assert not missing, f"document these settings: {missing}"

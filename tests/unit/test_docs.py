"""The README documents every setting, so adding one without documenting it fails here.

The output and refusal fields every sink's section has (``config.output``,
``config.refusal``) are documented once, as ``BRIDGE_<NAME>__FORMAT``..."""

from pathlib import Path

from bridge import plugins
from config.output import OutputSettings
from config.refusal import RefusalSettings
from config.settings import ENV_PREFIX, Settings
from config.variables import section_prefix, variables

README = Path(__file__).resolve().parents[2] / "README.md"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented() -> None:
    documentation = README.read_text() + "".join(
        path.read_text() for path in sorted(DOCS.glob("*.md"))
    )
    names = [variable.name for variable in variables(Settings, ENV_PREFIX)]
    for sink in plugins.available():
        model = plugins.load(sink).settings_model
        names += [variable.name for variable in variables(model, section_prefix(sink))]
    for every_sink in (OutputSettings, RefusalSettings):
        names += [variable.name for variable in variables(every_sink, section_prefix("<NAME>"))]
    missing = [name for name in names if f"`{name}`" not in documentation]
    assert not missing, f"document these settings: {missing}"

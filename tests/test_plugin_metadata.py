"""metadata.txt holds no placeholder and every field plugins.qgis.org's upload validator requires.

The required list and the URL syntax rule are those of the validator of plugins.qgis.org
(qgis/QGIS-Django, plugins/validator.py: PLUGIN_REQUIRED_METADATA and _check_url_link).
"""

from __future__ import annotations

import configparser
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
            "repository")
URL_FIELDS = ("tracker", "repository", "homepage")
PLACEHOLDERS = ("example.org", "example.com", "OWNER", "http://bugs", "http://repo", "http://homepage")


def metadata() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive for the validator
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    return dict(parser.items("general"))


def test_required_fields_are_present_and_urls_are_well_formed() -> None:
    meta = metadata()
    for field in REQUIRED:
        assert meta.get(field, "").strip(), field
    for field in URL_FIELDS:
        url = urlparse(meta[field])
        assert url.scheme == "https" and url.netloc, field


def test_no_placeholder_values() -> None:
    text = (ROOT / "metadata.txt").read_text(encoding="utf-8")
    for placeholder in PLACEHOLDERS:
        assert placeholder not in text, placeholder


def test_version_is_the_packages() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata()["version"] == project["version"]

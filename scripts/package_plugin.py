#!/usr/bin/env python3
"""Build dist/mmcanet_qgis.zip, the file QGIS's "Install from ZIP" accepts (and the plugin repository).

The ZIP holds one folder, ``mmcanet_qgis/`` (the plugin id):

    mmcanet_qgis/             the plugin sources (mmcanet_qgis/ of this repository) + metadata.txt
    mmcanet_qgis/lib/mmcanet/ the core library, vendored: the plugin appends lib/ to sys.path only when no
                              other ``mmcanet`` is importable (never a bare ``core`` package)
    mmcanet_qgis/resources/   the bundled model (resources/ of this repository); the vendored
                              mmcanet.modelfile.default_model_path() finds it at lib/../resources

PyTorch is not in the ZIP (hundreds of MB, per platform): the plugin installs it into its private folder
(see mmcanet_qgis/dependencies.py and docs/QGIS.md).

Usage: scripts/package_plugin.py [--out dist/] [--unpacked PLUGINS_DIR]
  --unpacked also installs the same tree into PLUGINS_DIR/mmcanet_qgis (replacing an older copy).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "mmcanet_qgis"
IGNORE_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache", "*.tmp")
IGNORE = shutil.ignore_patterns(*IGNORE_NAMES)
RESOURCE_SUFFIXES = (".safetensors", ".json", ".md", ".txt", ".svg", ".png")


def build_tree(dest: Path, root: Path = ROOT) -> Path:
    """Lay out the plugin folder under ``dest``; returns ``dest/mmcanet_qgis``. Warns if no model is bundled."""
    plugin = dest / PLUGIN
    if plugin.exists():
        shutil.rmtree(plugin)
    shutil.copytree(root / PLUGIN, plugin, ignore=shutil.ignore_patterns("lib", "resources", *IGNORE_NAMES))
    shutil.copy2(root / "metadata.txt", plugin / "metadata.txt")
    shutil.copytree(root / "core" / "mmcanet", plugin / "lib" / "mmcanet", ignore=IGNORE)
    for name in ("LICENSE", "LICENSE.txt", "COPYING"):
        if (root / name).is_file():
            shutil.copy2(root / name, plugin / "LICENSE")
            break
    resources = root / "resources"
    (plugin / "resources").mkdir()
    if resources.is_dir():
        for item in sorted(resources.iterdir()):
            if item.is_file() and item.suffix.lower() in RESOURCE_SUFFIXES:
                shutil.copy2(item, plugin / "resources" / item.name)
    if not (plugin / "resources" / "mmcanet_default.safetensors").is_file():
        print(f"warning: {resources}/mmcanet_default.safetensors not found: the package has no bundled model",
              file=sys.stderr)
    return plugin


def write_zip(plugin: Path, zip_path: Path) -> Path:
    """Zip ``plugin`` (a folder) so that the archive's single top-level entry is the folder itself."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(plugin.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(plugin.parent).as_posix())
    tmp.replace(zip_path)
    return zip_path


def main(argv: list[str] | None = None) -> int:
    """Build the ZIP (and optionally an unpacked install); prints the ZIP's path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--unpacked", type=Path, metavar="PLUGINS_DIR",
                        help="also install the plugin folder into PLUGINS_DIR (e.g. <profile>/python/plugins)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmcanet-package-") as tmp:
        plugin = build_tree(Path(tmp))
        zip_path = write_zip(plugin, args.out.resolve() / f"{PLUGIN}.zip")
        if args.unpacked:
            args.unpacked.mkdir(parents=True, exist_ok=True)
            target = args.unpacked / PLUGIN
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            shutil.copytree(plugin, target)
            print(f"installed {target}")
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

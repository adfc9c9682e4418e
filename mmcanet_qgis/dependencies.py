"""The plugin's private dependency folder: where QGIS finds torch & co, and how it is filled.

QGIS ships its own Python with numpy and GDAL but without PyTorch. The plugin keeps torch,
safetensors and tqdm in a folder of its own inside the QGIS profile,
``<profile>/python/mmcanet_deps/py<major><minor>`` (one folder per Python version, so an upgrade of
QGIS's Python never loads wheels built for another one), and puts it on ``sys.path`` when it loads.

The folder is filled with ``pip install --target`` run by *QGIS's own* Python interpreter (inside QGIS
``sys.executable`` is not that interpreter: it is QGIS itself or whichever python3 comes first on PATH),
with a constraints file that pins the numpy and GDAL QGIS already has, so nothing QGIS depends on is
replaced. This module uses the standard library only: it runs inside QGIS and as a command::

    /usr/bin/python3 <plugin folder>/dependencies.py install            # Linux, CPU wheels
    /usr/bin/python3 <plugin folder>/dependencies.py install --torch cuda
    /usr/bin/python3 <plugin folder>/dependencies.py status
    /usr/bin/python3 <plugin folder>/dependencies.py path | profile   # print the folder / the QGIS profile
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

REQUIREMENTS: tuple[str, ...] = ("torch>=2.1", "safetensors>=0.4", "tqdm")
"""What the core library needs beyond what QGIS's Python ships (numpy, GDAL)."""

TORCH_INDEXES: dict[str, str] = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
}
"""PyTorch's own wheel indexes. 'pypi' (no index option) uses pip's configured index as it is. On Linux
'cuda' uses PyPI too (PyPI's Linux torch is the CUDA build); elsewhere PyPI's torch is CPU-only, so 'cuda'
uses PyTorch's CUDA 12.8 index (another CUDA version: ``--index-url https://download.pytorch.org/whl/cuXYZ``)."""

PINNED: tuple[str, ...] = ("numpy", "GDAL")
"""Distributions QGIS depends on: pinned to the versions QGIS's Python has while installing."""

NOT_PRIVATE: frozenset[str] = frozenset(
    {"numpy", "numpy.libs", "gdal", "osgeo", "setuptools", "pkg_resources", "_distutils_hack",
     "distutils-precedence.pth"}
)
"""Top-level names removed from the private folder after installing, so that they never shadow QGIS's
own: numpy / GDAL (same versions anyway, see PINNED) and setuptools, which torch requires only to build
C++ extensions and whose recent versions lack pkg_resources, still used by some QGIS plugins."""

DEPS_DIRNAME = "mmcanet_deps"
ENV_DEPS_DIR = "MMCANET_DEPS_DIR"
_PLUGIN_DIR = Path(__file__).resolve().parent


def deps_dir(profile_dir: str | os.PathLike[str] | None = None) -> Path:
    """The private dependency folder for this Python version.

    Args:
        profile_dir: the QGIS profile folder (``.../QGIS3/profiles/default``); default: the running
            QGIS's profile, else the profile this plugin is installed in, else QGIS's default profile
            (``QGIS_CUSTOM_CONFIG_PATH`` respected). ``$MMCANET_DEPS_DIR`` overrides everything.
    """
    env = os.environ.get(ENV_DEPS_DIR)
    if env:
        return Path(env)
    profile = Path(profile_dir) if profile_dir else active_profile_dir()
    return profile / "python" / DEPS_DIRNAME / f"py{sys.version_info.major}{sys.version_info.minor}"


def active_profile_dir() -> Path:
    """The QGIS profile folder: the running QGIS's, the one this plugin sits in, or the default one."""
    if "qgis.core" in sys.modules:  # inside QGIS / qgis_process: ask QGIS (only once it is imported)
        from qgis.core import QgsApplication

        path = QgsApplication.qgisSettingsDirPath()
        if path:
            return Path(path)
    if _PLUGIN_DIR.parent.name == "plugins" and _PLUGIN_DIR.parent.parent.name == "python":
        return _PLUGIN_DIR.parents[2]
    return default_profile_dir()


def default_profile_dir(profile: str | None = None) -> Path:
    """QGIS 3's profile folder on this platform (``QGIS_CUSTOM_CONFIG_PATH`` respected)."""
    custom = os.environ.get("QGIS_CUSTOM_CONFIG_PATH")
    if custom:
        root = Path(custom)
    elif sys.platform == "win32":
        root = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "QGIS" / "QGIS3"
    return root / "profiles" / (profile or _default_profile_name(root))


def _default_profile_name(root: Path) -> str:
    ini = root / "profiles" / "profiles.ini"
    if ini.is_file():
        for line in ini.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "defaultProfile" and value.strip():
                return value.strip()
    return "default"


def add_to_sys_path() -> None:
    """Make the private folder and the vendored core library importable (called when the plugin loads).

    The private folder goes first on ``sys.path``: torch needs newer sympy / typing_extensions than some
    system Pythons have (Debian 12's sympy 1.11 breaks torch.fx). The folder never holds numpy, GDAL or
    setuptools (see NOT_PRIVATE), so QGIS keeps its own. The vendored ``mmcanet`` (``<plugin>/lib``, present
    in the packaged plugin) is appended only when no ``mmcanet`` is importable already.
    """
    folder = deps_dir()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    lib = _PLUGIN_DIR / "lib"
    if (lib / "mmcanet").is_dir() and str(lib) not in sys.path:
        import importlib.util

        if importlib.util.find_spec("mmcanet") is None:
            sys.path.append(str(lib))


def qgis_python() -> Path:
    """The interpreter QGIS embeds (the one whose packages QGIS imports), as a runnable file.

    Linux: ``/usr/bin/python3.X``; Windows (OSGeo4W / standalone installer): ``<QGIS>\\apps\\Python3X\\python.exe``;
    macOS (QGIS.app): ``.../Contents/MacOS/bin/python3`` or the framework's ``bin/python3.X``.
    Raises FileNotFoundError when none of the candidates exists.
    """
    major, minor = sys.version_info[:2]
    prefix = Path(sys.base_exec_prefix)  # the base installation, also when run from a venv
    candidates = [
        prefix / "bin" / f"python{major}.{minor}",
        prefix / "bin" / "python3",
        prefix / "python.exe",
        prefix / "python3.exe",
    ]
    if "qgis.core" not in sys.modules:  # run as a command by QGIS's python: sys.executable is right
        candidates.append(Path(sys.executable))
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(
        "could not find QGIS's Python interpreter (looked at: " + ", ".join(str(c) for c in candidates) + ")"
    )


def constraints_text(python: str | os.PathLike[str]) -> str:
    """A pip constraints file pinning PINNED distributions to the versions ``python`` has."""
    probe = (
        "import importlib.metadata as m\n"
        f"for name in {list(PINNED)!r}:\n"
        "    try: print(f'{name}=={m.version(name)}')\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    return "".join(ln.strip() + "\n" for ln in out.stdout.splitlines() if "==" in ln)


def install_command(
    python: str | os.PathLike[str],
    target: str | os.PathLike[str],
    constraints: str | os.PathLike[str],
    torch: str = "cpu",
    index_url: str | None = None,
    extra_constraints: Sequence[str | os.PathLike[str]] = (),
) -> list[str]:
    """The pip command line that fills ``target`` (built separately from running it, so it is testable).

    Args:
        python: QGIS's Python interpreter (see qgis_python).
        target: the private folder (see deps_dir).
        constraints: a constraints file (see constraints_text).
        torch: 'cpu' (PyTorch's CPU wheels, ~200 MB; macOS: PyPI's, which are CPU / Apple GPU builds),
            'cuda' (NVIDIA, several GB; see TORCH_INDEXES) or 'pypi' (pip's configured index as it is;
            on Linux PyPI's torch is the large CUDA build).
        index_url: explicit index (a mirror); overrides ``torch``.
        extra_constraints: more constraints files (e.g. a project's pins of torch).
    """
    if torch not in (*TORCH_INDEXES, "pypi"):
        raise ValueError(f"torch must be one of {', '.join((*TORCH_INDEXES, 'pypi'))}, not {torch!r}")
    cmd = [str(python), "-m", "pip", "install", "--upgrade", "--no-input", "--disable-pip-version-check",
           "--target", str(target), "--constraint", str(constraints)]
    for extra in extra_constraints:
        cmd += ["--constraint", str(extra)]
    if index_url:
        cmd += ["--index-url", index_url]
    elif (torch == "cpu" and sys.platform != "darwin") or (torch == "cuda" and not sys.platform.startswith("linux")):
        cmd += ["--index-url", TORCH_INDEXES[torch], "--extra-index-url", "https://pypi.org/simple"]
    return cmd + list(REQUIREMENTS)


def install(
    target: str | os.PathLike[str] | None = None,
    torch: str = "cpu",
    index_url: str | None = None,
    python: str | os.PathLike[str] | None = None,
    extra_constraints: Sequence[str | os.PathLike[str]] = (),
    log: Callable[[str], None] = print,
) -> Path:
    """Fill the private folder with REQUIREMENTS; returns it. Raises RuntimeError when pip fails."""
    py = Path(python) if python else qgis_python()
    dest = Path(target) if target else deps_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmcanet-deps-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(constraints_text(py), encoding="utf-8")
        cmd = install_command(py, dest, constraints, torch=torch, index_url=index_url,
                              extra_constraints=extra_constraints)
        log("running: " + " ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log(line.rstrip())
        if proc.wait() != 0:
            raise RuntimeError(f"pip failed (exit code {proc.returncode}); the output above says why")
    for name in _remove_not_private(dest):
        log(f"removed {name} from {dest} (QGIS's own copy is used)")
    log(f"installed into {dest}; restart QGIS to use it")
    return dest


def _remove_not_private(folder: Path) -> list[str]:
    """Delete NOT_PRIVATE packages (and their .dist-info) from ``folder``; returns the names removed."""
    removed = []
    for entry in sorted(folder.iterdir()):
        name = entry.name.lower()
        top = name.split("-")[0] if name.endswith((".dist-info", ".egg-info")) else name
        if top in NOT_PRIVATE or top.removesuffix(".py") in NOT_PRIVATE:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return removed


def install_hint() -> str:
    """The exact command that fills the private folder of this QGIS, for error messages."""
    try:
        py = str(qgis_python())
    except FileNotFoundError:
        py = "<QGIS's python3>"
    script = _PLUGIN_DIR / "dependencies.py"
    return f'"{py}" "{script}" install --target "{deps_dir()}"'


def status(target: Path | None = None) -> dict[str, str]:
    """Where the private folder is and which of REQUIREMENTS import from where (no import side effects)."""
    import importlib.util

    info = {"deps_dir": str(target or deps_dir())}
    for req in REQUIREMENTS:
        name = req.split(">")[0].split("=")[0].split("<")[0]
        spec = importlib.util.find_spec(name)
        info[name] = spec.origin if spec and spec.origin else "missing"
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``install`` fills the private folder, ``status`` shows it, ``path`` prints it."""
    parser = argparse.ArgumentParser(prog="dependencies.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="pip-install torch, safetensors, tqdm into the private folder")
    inst.add_argument("--torch", choices=(*TORCH_INDEXES, "pypi"), default="cpu",
                      help="which PyTorch wheels: cpu (default), cuda (NVIDIA GPU), pypi (pip's configured index)")
    inst.add_argument("--index-url", help="install from this package index instead (a mirror)")
    inst.add_argument("--constraint", action="append", default=[], help="an extra pip constraints file")
    for p in (inst, sub.add_parser("path", help="print the private folder"),
              sub.add_parser("profile", help="print the QGIS profile folder"),
              sub.add_parser("status", help="show the private folder and where each dependency comes from")):
        p.add_argument("--target", help="the folder (default: <QGIS profile>/python/mmcanet_deps/pyXY)")
        p.add_argument("--profile-dir", help="the QGIS profile folder (default: QGIS's default profile)")
    args = parser.parse_args(argv)
    if args.command == "profile":
        print(Path(args.profile_dir) if args.profile_dir else active_profile_dir())
        return 0
    target = Path(args.target) if args.target else deps_dir(args.profile_dir)
    if args.command == "path":
        print(target)
        return 0
    if args.command == "status":
        if target.is_dir():
            sys.path.insert(0, str(target))
        for key, value in status(target).items():
            print(f"{key}: {value}")
        return 0
    try:
        install(target, torch=args.torch, index_url=args.index_url, extra_constraints=args.constraint)
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: restore real Sentinel scenes with the bundled model through qgis_process, as users do.

Scenes:
  1. always: a real co-registered Sentinel-1 + Sentinel-2 (Level-2A) BigEarthNet-MM patch from the PyPI
     package `bigearthnet-common` (downloaded by pip into .cache/demo), clouded by our simulator (seed 1),
     so the real clear image is the reference;
  2. when ../shared/data exists: a real cloudy SEN12MS-CR triplet the bundled model never saw in
     training (4438, 36 % cloud) with its real cloud-free reference, and the real georeferenced cloudy
     scene ROIs1868_summer_19_p30 (UTM 31N; no reference exists for it).
Each is restored by `qgis_process.bin run mmcanet:remove_clouds` (the plugin loaded from a scratch
profile), then scored (PSNR/SSIM/MAE/SAM, protocol of docs/MODEL.md) against the reference with the
identity baseline, and drawn as SAR | cloudy | restored | reference PNGs. Output: demo-output/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo-output"
CACHE = ROOT / ".cache" / "demo"
SHARED = ROOT.parent / "shared" / "data"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
BEN_PATCH = ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", "S2A_MSIL2A_20170613T101031_87_48")

sys.path.insert(0, str(ROOT / "core"))
from mmcanet.bands import S2_BANDS_L2A  # noqa: E402
from mmcanet.clouds.simulate import simulate_clouds  # noqa: E402
from mmcanet.metrics import compute_metrics  # noqa: E402
from mmcanet.normalization import Normalization  # noqa: E402

gdal.UseExceptions()
NORM = Normalization()


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def fetch_bigearthnet() -> Path:
    """Download bigearthnet-common (PyPI) once and unpack its S1/S2 example patches."""
    dest = CACHE / "bigearthnet"
    if (dest / "BigEarthNet-S2-Example").is_dir():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    say("downloading the BigEarthNet-MM example patches (PyPI package bigearthnet-common, Apache-2.0)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                    "bigearthnet-common==2.8.0", "-d", str(dest)], check=True)
    wheel = next(dest.glob("bigearthnet_common-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith("-Example.tar.bz2"):
                (dest / Path(name).name).write_bytes(zf.read(name))
    for tb in dest.glob("*-Example.tar.bz2"):
        with tarfile.open(tb) as tf:
            members = [m for m in tf.getmembers() if (m.isfile() or m.isdir())
                       and not m.name.startswith(("/", "..")) and ".." not in Path(m.name).parts]
            tf.extractall(dest, members=members)  # only plain files/folders inside dest
    return dest


def write_tif(path: Path, arr: np.ndarray, like: gdal.Dataset | None, dtype: int, names: list[str]) -> None:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], dtype,
                                              ["COMPRESS=DEFLATE"])
    if like is not None:
        ds.SetGeoTransform(like.GetGeoTransform())
        ds.SetProjection(like.GetProjection())
    for i, name in enumerate(names):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr[i])
        band.SetDescription(name)
    ds = None


def prepare_bigearthnet(work: Path, env: dict[str, str]) -> dict[str, Path]:
    """Stack the real BigEarthNet band files (S1 VV, VH dB; S2 L2A at 10/20/60 m) with mmcanet:stack_bands,
    as a user would from downloaded data, then cloud the S2 stack with our simulator (seed 1)."""
    src = fetch_bigearthnet()
    s1_dir = src / "BigEarthNet-S1-Example" / BEN_PATCH[0]
    s2_dir = src / "BigEarthNet-S2-Example" / BEN_PATCH[1]
    paths = {"sar": work / "ben_s1.tif", "optical": work / "ben_s2_cloudy.tif", "reference": work / "ben_s2_clear.tif"}
    run_qgis_process(env, "stack_bands", {"INPUT": s2_dir, "SENSOR": 0, "OUTPUT": paths["reference"]})
    run_qgis_process(env, "stack_bands", {"INPUT": s1_dir, "SENSOR": 1, "OUTPUT": paths["sar"]})
    ref = gdal.Open(str(paths["reference"]))
    clear_dn = ref.ReadAsArray().astype(np.float32)
    sim = simulate_clouds(NORM.s2_to_unit(clear_dn), 1, thickness="mixed", coverage=0.5)
    write_tif(paths["optical"], np.round(sim.cloudy * 10000).astype(np.uint16), ref, gdal.GDT_UInt16, list(S2_BANDS_L2A))
    return paths


def qgis_env() -> dict[str, str]:
    """A scratch QGIS profile with the plugin tree as packaged, the venv's packages on PYTHONPATH."""
    plugins = CACHE / "plugins"
    if plugins.exists():
        shutil.rmtree(plugins)
    sys.path.insert(0, str(ROOT / "scripts"))
    import package_plugin

    package_plugin.build_tree(plugins)
    env = dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins),
               QGIS_CUSTOM_CONFIG_PATH=str(CACHE / "qgis-profile"),
               PYTHONPATH=sysconfig.get_paths()["purelib"], MMCANET_DEPS_DIR=str(CACHE / "no-deps"))
    env.pop("MMCANET_MODEL", None)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "mmcanet_qgis"], env=env, capture_output=True, text=True)
    return env


def run_qgis_process(env: dict[str, str], algorithm: str, params: dict[str, object]) -> float:
    """Run mmcanet:<algorithm> headless; returns seconds. Raises with qgis_process's message on failure."""
    cmd = [QGIS_PROCESS, "run", f"mmcanet:{algorithm}", "--json", "--", *(f"{k}={v}" for k, v in params.items())]
    say("$ " + " ".join(cmd))
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"qgis_process failed (rc {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    json.loads(res.stdout)  # clean JSON on stdout
    return dt


def restore_with_qgis_process(env: dict[str, str], sar: Path, optical: Path, output: Path) -> float:
    """Run mmcanet:remove_clouds headless (also writing the cloud mask used); returns seconds."""
    if output.exists():
        output.unlink()
    return run_qgis_process(env, "remove_clouds", {"SAR": sar, "OPTICAL": optical, "OUTPUT": output,
                                                   "MASK_OUTPUT": output.with_name(output.stem + "_mask.tif")})


def read_unit(path: Path) -> np.ndarray:
    return NORM.s2_to_unit(gdal.Open(str(path)).ReadAsArray().astype(np.float32))


def rgb(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, idx: tuple[int, int, int]) -> np.ndarray:
    return np.clip((x[list(idx)].transpose(1, 2, 0) - lo) / (hi - lo + 1e-6), 0, 1)


def quicklook(png: Path, title: str, sar: Path, panels: dict[str, np.ndarray], idx: tuple[int, int, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_img = panels.get("reference", panels["restored"])
    lo = np.percentile(ref_img[list(idx)], 2, axis=(1, 2))
    hi = np.percentile(ref_img[list(idx)], 98, axis=(1, 2))
    s1 = gdal.Open(str(sar)).ReadAsArray()[0]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.6))
    axes[0].imshow(np.clip((s1 + 25) / 25, 0, 1), cmap="gray")
    axes[0].set_title("Sentinel-1 VV")
    for ax, (name, img) in zip(axes[1:], panels.items(), strict=False):
        ax.imshow(rgb(img, lo, hi, idx))
        ax.set_title(name)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    work = CACHE / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    env = qgis_env()
    scenes = [("bigearthnet_simulated", prepare_bigearthnet(work, env), (3, 2, 1),
               "BigEarthNet-MM real S1 + S2 L2A (33UUP, 2017-06-13), simulated clouds (seed 1)")]
    if SHARED.is_dir():
        t = SHARED / "sen12mscr-triplets"
        scenes.append(("sen12mscr_4438_real", {"sar": t / "4438_s1.tif", "optical": t / "4438_s2_cloudy.tif",
                                                "reference": t / "4438_s2_cloudfree.tif"}, (3, 2, 1),
                       "SEN12MS-CR triplet 4438: real clouds, real cloud-free reference (held out from training)"))
        g = SHARED / "sen12mscr-georef"
        scenes.append(("sen12mscr_ROIs1868_summer_19_p30_real", {"sar": g / "ROIs1868_summer_19_p30_s1.tif",
                                                                  "optical": g / "ROIs1868_summer_19_p30_s2_cloudy.tif"},
                       (3, 2, 1), "SEN12MS-CR ROIs1868_summer_19_p30 (EPSG:32631): real clouds, no reference"))
    else:
        say(f"{SHARED} not found: showing only the BigEarthNet scene")
    summary = []
    for name, paths, idx, title in scenes:
        out = OUT / f"{name}_restored.tif"
        sec = restore_with_qgis_process(env, paths["sar"], paths["optical"], out)
        restored = read_unit(out)
        cloudy = read_unit(paths["optical"])
        panels = {"cloudy input": cloudy, "restored": restored}
        line = f"{name}: restored in {sec:.1f} s (qgis_process, incl. start-up) -> {out.relative_to(ROOT)}"
        if "reference" in paths:
            reference = read_unit(paths["reference"])
            panels["reference"] = reference
            m, i = compute_metrics(restored, reference), compute_metrics(cloudy, reference)
            line += (f"\n    restored: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  MAE {m['mae']:.4f}  SAM {m['sam']:.2f} deg"
                     f"\n    identity: PSNR {i['psnr']:.2f} dB  SSIM {i['ssim']:.3f}  MAE {i['mae']:.4f}  SAM {i['sam']:.2f} deg")
        png = OUT / f"{name}.png"
        quicklook(png, title, paths["sar"], panels, idx)
        line += f"\n    picture: {png.relative_to(ROOT)}"
        summary.append(line)
    print("\n" + "\n".join(summary))
    say(f"done: outputs in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

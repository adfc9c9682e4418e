"""`mmcanet info [MODEL] [--json]`: describe a model file (default: the bundled model)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    """Add the `info` subcommand."""
    p = sub.add_parser("info", help="describe a model file: architecture, bands, normalisation, size, compute")
    p.add_argument("model", nargs="?", default=None, help="model file (.safetensors); default: the bundled model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tile", type=int, default=256, help="tile side for the MAC count (default 256)")
    p.set_defaults(func=run)


def describe(model_path: str | None, tile: int = 256) -> dict[str, Any]:
    """Model description as a dict (keys: path, card fields, params, gmacs_per_256_tile, ...)."""
    from ..complexity import count_macs, count_params
    from ..modelfile import default_model_path, load_model
    from ..models import model_config

    path = model_path or str(default_model_path())
    model, card = load_model(path, "cpu")
    card_d = json.loads(card.to_json())
    macs = count_macs(model, tile, tile, len(card.s2_bands))
    return {
        "path": str(path),
        **card_d,
        "effective_config": model_config(card.arch, **card.config),
        "params": count_params(model),
        "gmacs_per_256_tile": round(count_macs(model, 256, 256, len(card.s2_bands)) / 1e9, 3),
        f"gmacs_per_{tile}_tile": round(macs / 1e9, 3),
    }


def run(args: argparse.Namespace) -> int:
    """Print the description."""
    d = describe(args.model, args.tile)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    norm = d["normalization"]
    lines = [
        f"model file : {d['path']}",
        f"name       : {d['name']} (version {d['version']}, {d['format']})",
        f"network    : {d['arch']}, strategy {d['strategy']}, config {json.dumps(d['effective_config'], sort_keys=True)}"
        " (the card's, defaults filled in)",
        f"S2 bands   : {' '.join(d['s2_bands'])} (DN = reflectance x 10000, scaled by 1/{norm['s2_max_dn']:g})",
        f"S1 bands   : {' '.join(d['s1_bands'])} (dB, clipped to {norm['s1_db_ranges']} -> 0-1)",
        f"tiles      : {d['tile_size']} px, overlap {d['overlap']} px",
        f"parameters : {d['params']:,}",
        f"compute    : {d['gmacs_per_256_tile']} GMACs per 256x256 tile",
    ]
    if d.get("training"):
        lines.append(f"training   : {json.dumps(d['training'])}")
    if d.get("metrics"):
        lines.append(f"metrics    : {json.dumps(d['metrics'])}")
    trust = d.get("trust") or {}
    if trust.get("predictor"):
        lines.append(f"trust layer: fitted feature predictor ({len(trust['predictor'].get('features', []))} features, "
                     f"error_scale {trust.get('error_scale')}, kept_error {trust.get('kept_error')}, median within-image "
                     f"Spearman {trust.get('median_spearman')}); --uncertainty-output available")
    elif d["config"].get("error_head"):
        cal = (f"calibrated: error_scale {trust['error_scale']}, kept_error {trust.get('kept_error')}, median "
               f"within-image Spearman {trust.get('median_spearman')}" if "error_scale" in trust
               else "NOT calibrated (scripts/calibrate_error.py)")
        lines.append(f"trust layer: error head ({cal}); --uncertainty-output available")
    else:
        lines.append("trust layer: none (no fitted predictor, no error head; scripts/fit_trust.py adds one, docs/TRUST.md)")
    print("\n".join(lines))
    return 0

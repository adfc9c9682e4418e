"""Copy a trained model into resources/ with a complete card: full config and held-out figures.

Run: .venv/bin/python scripts/finalize_model.py runs/bundled/mmcanet_default.safetensors configs/bundled.toml
     [--out resources/mmcanet_default.safetensors]
The held-out figures are recomputed with this version's inference path (the config's [[val]] sources,
never trained on) so that the card describes exactly what users run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

from mmcanet import __version__  # noqa: E402
from mmcanet.config import load_config  # noqa: E402
from mmcanet.datasets import open_source  # noqa: E402
from mmcanet.evaluation import heldout_metrics  # noqa: E402
from mmcanet.modelfile import load_model, save_model  # noqa: E402
from mmcanet.models import build_model, model_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("config")
    ap.add_argument("--out", default=str(ROOT / "resources" / "mmcanet_default.safetensors"))
    args = ap.parse_args()
    trained, card = load_model(args.model, "cpu")
    cfg = load_config(args.config)
    card.version = __version__  # the release that ships it (the trainer records the one that trained it)
    card.config = model_config(card.arch, **card.config)  # spell out every option, defaults included
    model = build_model(card.arch, card.strategy, **card.config)
    model.load_state_dict(trained.state_dict())
    model.eval()
    readers = [open_source(s.path, s.kind, "val", s.include, s.exclude)[0] for s in cfg.val]
    # the scoring rule of `mmcanet evaluate` (mask given, card normalisation), so the card matches it
    metrics = heldout_metrics(model, readers, __import__("torch").device("cpu"), card.normalization)
    card.metrics = {"heldout": {k: round(v, 4) for k, v in metrics.items()},
                    "heldout_images": [f"{Path(s.path).name} {s.include}" for s in cfg.val]}
    card.training["data"] = [f"{Path(s.path).name} (kind {s.kind}, exclude {s.exclude}, repeat {s.repeat})" for s in cfg.data]
    card.training["validation"] = card.metrics["heldout_images"]
    card.training["recipe"] = f"mmcanet train --config {Path(args.config).as_posix()}; scripts/finalize_model.py"
    out = save_model(args.out, model, card)
    print(json.dumps(card.metrics, indent=1))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

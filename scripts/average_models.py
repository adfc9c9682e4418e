"""Average the weights of model files that continue one model ("model soup", Wortsman et al., ICML 2022).

Run: .venv/bin/python scripts/average_models.py --out runs/soup.safetensors \\
         resources/mmcanet_default.safetensors runs/bundled-stage2b/mmcanet_default.safetensors [...]
     (``FILE@WEIGHT`` weights one input; default 1 each). Then measure it as users run it:
     .venv/bin/python bench/validate_engine.py --no-keep-clear --model runs/soup.safetensors --label soup

Only runs that start from the same weights average into a working network (docs/QUALITY.md section 1f);
the inputs must share architecture, strategy, bands and network config. The output keeps the first
file's card with the averaged files listed under ``training.averaged_from`` and without held-out
figures (those of the first file would not describe it; ``scripts/finalize_model.py`` computes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

from mmcanet.errors import ModelFileError  # noqa: E402
from mmcanet.modelfile import ModelCard, load_model, save_model  # noqa: E402
from mmcanet.models import model_config  # noqa: E402

INFERENCE_ONLY = ("guide_reach",)
"""Model-config keys that change how the network is run, not its weights."""


def parse_input(text: str) -> tuple[Path, float]:
    """``FILE`` or ``FILE@WEIGHT`` -> (path, weight > 0)."""
    path, _, weight = text.rpartition("@") if "@" in text else (text, "", "1")
    try:
        w = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: the weight after @ must be a number") from None
    if not w > 0:
        raise argparse.ArgumentTypeError(f"{text}: the weight after @ must be > 0")
    return Path(path), w


def average(inputs: list[tuple[Path, float]], out: Path) -> Path:
    """Write the weighted mean of the inputs' floating-point weights (others from the first) to ``out``."""
    if len(inputs) < 2:
        raise ModelFileError("give at least two model files to average")
    models = [(path, w, *load_model(path)) for path, w in inputs]
    first_path, _, net, card = models[0]
    def network(c: ModelCard) -> tuple[object, ...]:
        # the effective config (defaults filled in) without the inference-only guide_reach: older cards
        # omit keys at their defaults, and the guide does not change the weights
        cfg = {k: v for k, v in model_config(c.arch, **c.config).items() if k not in INFERENCE_ONLY}
        return c.arch, c.strategy, tuple(c.s2_bands), cfg

    for path, _, _, other in models[1:]:
        same = network(other) == network(card)
        if not same:
            raise ModelFileError(f"{path}: not the same network as {first_path} (architecture, strategy, bands or "
                                 "config differ); only continuations of one model can be averaged")
    total = sum(w for _, w, _, _ in models)
    states = [(w, m.state_dict()) for _, w, m, _ in models]
    merged = {}
    for key, value in states[0][1].items():
        merged[key] = sum(w * s[key] for w, s in states) / total if value.is_floating_point() else value
    net.load_state_dict(merged)
    card.training = {**card.training, "averaged_from": [{"file": str(p), "weight": w} for p, w, _, _ in models]}
    card.metrics = {}  # the first file's figures do not describe the average: finalize_model.py recomputes them
    return save_model(out, net, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=parse_input, help="model files, FILE or FILE@WEIGHT")
    ap.add_argument("--out", required=True, type=Path, help="averaged model file to write (.safetensors)")
    args = ap.parse_args()
    try:
        print(average(args.models, args.out))
    except ModelFileError as exc:
        sys.exit(f"average_models: {exc}")


if __name__ == "__main__":
    main()

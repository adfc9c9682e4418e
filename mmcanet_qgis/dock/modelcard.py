"""Read a model file's card without torch (mmcanet.modelfile.read_card) for the dock's summary line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmcanet.modelfile import ModelCard


class CardError(ValueError):
    """The model file is missing, unreadable or carries no valid MMCANet model card (plain message)."""


def read_model_card(path: str) -> ModelCard:
    """The card of the model file at `path`; `card.summary()` is the dock's one-line description.

    Only the safetensors header is read and torch is never imported, so this can run on every change
    of the model field.
    """
    try:
        from mmcanet.errors import MMCANetError
        from mmcanet.modelfile import read_card
    except ModuleNotFoundError as exc:
        raise CardError(
            f"The MMCANet core library cannot be imported ({exc}); reinstall the plugin."
        ) from exc
    try:
        return read_card(path)
    except MMCANetError as exc:
        raise CardError(str(exc)) from exc


def predicts_error(card: Any) -> bool:
    """Whether the model behind `card` has a trust layer (fitted predictor or error head): can write the predicted error.

    The card says so itself (`ModelCard.has_error_head`); a card written before that property existed
    keeps the flag in its architecture configuration.
    """
    flag = getattr(card, "has_error_head", None)
    if flag is None:
        config = getattr(card, "config", None)
        flag = isinstance(config, dict) and config.get("error_head", False)
    return bool(flag)

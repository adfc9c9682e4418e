"""The Processing algorithms of the provider `mmcanet`, one per file (file name = algorithm name)."""

from .detect_clouds import DetectCloudsAlgorithm
from .evaluate_model import EvaluateModelAlgorithm
from .remove_clouds import RemoveCloudsAlgorithm
from .simulate_clouds import SimulateCloudsAlgorithm
from .stack_bands import StackBandsAlgorithm
from .train_model import TrainModelAlgorithm

ALGORITHMS = (
    RemoveCloudsAlgorithm,
    TrainModelAlgorithm,
    EvaluateModelAlgorithm,
    SimulateCloudsAlgorithm,
    DetectCloudsAlgorithm,
    StackBandsAlgorithm,
)

__all__ = ["ALGORITHMS"]

"""The RTMO network (backbone, neck, head with the DCC) and its prediction path."""

from rtmo.model.head import DenseOutputs
from rtmo.model.postprocess import PaddedPredictions
from rtmo.model.rtmo import RTMOModel

__all__ = ["DenseOutputs", "PaddedPredictions", "RTMOModel"]

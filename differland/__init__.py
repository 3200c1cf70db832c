"""differland: a differentiable DALEC land-surface model in JAX."""

from differland.config import ModelConfig
from differland.forcing import Forcing, ForcingError, make_forcing
from differland.model import Trajectory, initial_state, simulate, simulate_pixels, step
from differland.options import (
    CalendarPhenology,
    CanopySaturation,
    ClimatePhenology,
    DeepWaterUptake,
    DroughtLeafLoss,
    GlobalModel,
    GroundwaterSupply,
    LinearBeta,
    NeuralBeta,
    NeuralET,
    NeuralWeatherFactor,
    NoWaterStress,
    SiteModel,
    UnderlyingWUE,
    WaterLimitedDecomposition,
)
from differland.params import ParameterError, ParameterSet, default_parameters
from differland.precision import enable_float64
from differland.processes.neural import init_network
from differland.state import State, StepOutputs

__all__ = [
    "CalendarPhenology",
    "CanopySaturation",
    "ClimatePhenology",
    "DeepWaterUptake",
    "DroughtLeafLoss",
    "Forcing",
    "ForcingError",
    "GlobalModel",
    "GroundwaterSupply",
    "LinearBeta",
    "ModelConfig",
    "NeuralBeta",
    "NeuralET",
    "NeuralWeatherFactor",
    "NoWaterStress",
    "ParameterError",
    "ParameterSet",
    "SiteModel",
    "State",
    "StepOutputs",
    "Trajectory",
    "UnderlyingWUE",
    "WaterLimitedDecomposition",
    "default_parameters",
    "enable_float64",
    "init_network",
    "initial_state",
    "make_forcing",
    "simulate",
    "simulate_pixels",
    "step",
]
__version__ = "0.1.0"

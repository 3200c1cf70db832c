"""Spatialization: one network maps what is known about a place (climate, plant functional
type, soil, ...) to its model parameters, trained on many sites at once, so that the model
runs where no tower stands. The only part of differland that uses Flax."""

from differland.spatial.predictors import (
    CLIMATE_PREDICTORS,
    IGBP_PFT,
    PFT_CLASSES,
    PredictorError,
    Standardizer,
    climate_predictors,
    predictor_names,
    site_predictors,
)
from differland.spatial.training import (
    SiteBatch,
    SpatialConfig,
    Trained,
    physical_parameters,
    r_squared,
    train,
)

__all__ = [
    "CLIMATE_PREDICTORS", "IGBP_PFT", "PFT_CLASSES", "PredictorError", "SiteBatch",
    "SpatialConfig", "Standardizer", "Trained", "climate_predictors", "physical_parameters",
    "predictor_names", "r_squared", "site_predictors", "train",
]

"""Static model configuration: typed, hashable choices fixed at trace time.

Variants and process options are frozen dataclasses chosen by type, never strings compared
inside jitted code. A :class:`ModelConfig` is a valid ``static_argnames`` value for ``jax.jit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from differland.params import Variant


@dataclass(frozen=True)
class SiteModel:
    """Daily flux-site model (DALEC990): two water buckets (PAW, PUW), no fire."""

    name: Variant = field(default="site", init=False)


@dataclass(frozen=True)
class GlobalModel:
    """Monthly global model (DALEC993): one water bucket, fire, SIF and VOD."""

    name: Variant = field(default="global", init=False)


@dataclass(frozen=True)
class NoWaterStress:
    """beta = 1: GPP is not limited by soil water (the reference's "baseline"/"nothing")."""


@dataclass(frozen=True)
class LinearBeta:
    """beta = clip((W - WP) / (FC - WP), 0, 1), WP = FC x wilting_point_fraction.

    W is the start-of-step plant-available water. This is the reference's "default".
    """


@dataclass(frozen=True)
class NeuralBeta:
    """beta = sigmoid(MLP(W / water_scale)): a small neural network of soil water.

    The network weights are passed to ``simulate`` as ``network``; see
    :func:`differland.processes.water.init_beta_network`.

    Attributes:
        hidden: width of each hidden layer.
        layers: number of hidden layers (leaky-ReLU).
        water_scale: soil water that maps to an input of 1 [mm].
    """

    hidden: int = 10
    layers: int = 1
    water_scale: float = 1500.0


WaterStress = NoWaterStress | LinearBeta | NeuralBeta


@dataclass(frozen=True)
class ModelConfig:
    """Everything static about a run.

    Attributes:
        model: :class:`SiteModel` or :class:`GlobalModel`.
        water_stress: :class:`NoWaterStress`, :class:`LinearBeta` or :class:`NeuralBeta`.
        reference_mode: reproduce the published DifferLand code exactly, including its hard
            clamps of pools to the prior bounds of the initial pools and its mass-balance bugs.
            The default (False) keeps every pool non-negative by limiting outflows to what the
            pool holds, which conserves carbon and water exactly and keeps gradients alive.
        checkpoint_every: if set, the time loop is split into segments of this many steps
            and each segment is rematerialised (``jax.checkpoint``) in reverse mode, so
            memory grows with T / checkpoint_every instead of T.
        outputs: names of :class:`~differland.state.StepOutputs` fields to keep for every step
            (``None`` keeps all). Dropping outputs saves memory and time in long runs.
        keep_states: keep the end-of-step state of every step (else only the final state).
    """

    model: SiteModel | GlobalModel = field(default_factory=SiteModel)
    water_stress: WaterStress = field(default_factory=NoWaterStress)
    reference_mode: bool = False
    checkpoint_every: int | None = None
    outputs: tuple[str, ...] | None = None
    keep_states: bool = True

    def __post_init__(self):
        if not isinstance(self.model, SiteModel | GlobalModel):
            raise TypeError(f"model must be SiteModel() or GlobalModel(), got {self.model!r}")
        if not isinstance(self.water_stress, NoWaterStress | LinearBeta | NeuralBeta):
            raise TypeError(f"unknown water_stress option {self.water_stress!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive number of steps")
        if self.outputs is not None:
            object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def variant(self) -> Variant:
        return self.model.name


WaterStressName = Literal["none", "beta", "neural"]
WATER_STRESS_OPTIONS: dict[str, WaterStress] = {
    "none": NoWaterStress(),
    "beta": LinearBeta(),
    "neural": NeuralBeta(),
}
MODEL_OPTIONS: dict[str, SiteModel | GlobalModel] = {"site": SiteModel(), "global": GlobalModel()}

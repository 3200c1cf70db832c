"""The spatialization network (Flax NNX): a place's predictors -> its parameters.

A shared trunk of ``depth`` dense layers of width ``hidden`` (GELU) and one linear head with
an output per parameter the model configuration reads. The head's outputs are unconstrained
values that the parameter registry's bounded transforms
(:func:`differland.params.constrain`) map inside every parameter's prior box, so every
prediction is within bounds. The head starts at zero: before training, every site gets the
centre of each transform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class SpatialNetwork(nnx.Module):
    """Predictors ``(n_sites, n_inputs)`` -> unconstrained parameters ``(n_sites,
    n_outputs)``."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int, depth: int,
                 rngs: nnx.Rngs):
        sizes = [n_inputs] + [hidden] * depth
        self.trunk = nnx.List([nnx.Linear(a, b, rngs=rngs)
                               for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        self.head = nnx.Linear(sizes[-1], n_outputs, kernel_init=nnx.initializers.zeros,
                               rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.trunk:
            x = jax.nn.gelu(layer(x))
        return self.head(x)


def new(n_inputs: int, n_outputs: int, hidden: int, depth: int, seed: int) -> SpatialNetwork:
    """A new network module of ``seed`` (the head's weights at zero)."""
    return SpatialNetwork(n_inputs, n_outputs, hidden, depth, nnx.Rngs(seed))


def build(n_inputs: int, n_outputs: int, hidden: int, depth: int, seed: int):
    """``(graphdef, state)`` of a new network: the static structure and the weights as a
    pytree (what the optimiser updates and the checkpoints hold)."""
    return nnx.split(new(n_inputs, n_outputs, hidden, depth, seed))


def apply(graphdef, state, inputs) -> jax.Array:
    """The network's unconstrained outputs for ``inputs``."""
    return nnx.merge(graphdef, state)(jnp.asarray(inputs))


def to_pure(state) -> dict:
    """The weights as nested dictionaries of arrays (for saving)."""
    return nnx.to_pure_dict(state)


def from_pure(graphdef, template_state, values: dict):
    """Weights saved by :func:`to_pure`, in the structure of ``template_state``."""
    state = jax.tree.map(lambda x: x, template_state)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, values))
    return state

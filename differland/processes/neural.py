"""Small multilayer perceptrons for hybrid process terms (plain pytrees of weights).

A network is a list of ``{"weight": (n_in, n_out), "bias": (n_out,)}`` layers with leaky-ReLU
hidden layers and a linear output. The weights of every neural term of a model configuration
travel together as one mapping ``{term: layers}`` (see :func:`init_network`), which is the
``network`` argument of :func:`differland.model.simulate`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_mlp(key: jax.Array, sizes: tuple[int, ...], dtype=None) -> list[dict]:
    """Glorot-normal weights and unit biases (as the reference) for layer ``sizes``."""
    dtype = dtype or jnp.result_type(float)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        key, sub = jax.random.split(key)
        std = jnp.sqrt(2.0 / (n_in + n_out))
        layers.append({"weight": std * jax.random.normal(sub, (n_in, n_out), dtype),
                       "bias": jnp.ones((n_out,), dtype)})
    return layers


def dense(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``x @ weight`` for one input vector ``x`` (shape ``(n_in,)``) of a small layer.

    Written as a broadcast product and a sum over the inputs, which XLA fuses with the
    surrounding elementwise work. Inside a compiled time loop, vmapped over starts or pixels
    that each carry their own weights, it avoids the separate small kernel per step that a
    batched matrix product becomes on CPU (docs/performance.md). For large products outside
    the time loop keep ``@``.
    """
    return jnp.sum(x[:, None] * weight, axis=0)


def mlp(x: jax.Array, layers: list[dict]) -> jax.Array:
    """Apply the network to one input vector ``x`` (shape ``(n_in,)``)."""
    return mlp_from_first_layer(dense(x, layers[0]["weight"]) + layers[0]["bias"], layers)


def mlp_sequence(x: jax.Array, layers: list[dict]) -> jax.Array:
    """Apply the network to inputs with leading axes, ``x`` of shape ``(..., n_in)``.

    For whole input series outside the time loop (e.g. every step of a forcing record at
    once), where matrix products are the efficient form.
    """
    for i, layer in enumerate(layers):
        if i:
            x = jax.nn.leaky_relu(x)
        x = x @ layer["weight"] + layer["bias"]
    return x


def mlp_from_first_layer(pre_activation: jax.Array, layers: list[dict]) -> jax.Array:
    """The rest of :func:`mlp` given the first layer's pre-activation ``x W0 + b0``.

    Lets a caller compute the part of ``x W0`` that does not change along a sequence once,
    vectorised, outside a time loop.
    """
    x = pre_activation
    for layer in layers[1:]:
        x = dense(jax.nn.leaky_relu(x), layer["weight"]) + layer["bias"]
    return x


def layer_sizes(layers: list[dict]) -> tuple[int, ...]:
    """``(n_in, hidden..., n_out)`` of a network; ``ValueError`` if the layers do not chain."""
    if not layers:
        raise ValueError("a network needs at least one layer")
    sizes = [int(jnp.shape(layers[0]["weight"])[0])]
    for i, layer in enumerate(layers):
        weight, bias = jnp.shape(layer["weight"]), jnp.shape(layer["bias"])
        if len(weight) != 2 or weight[0] != sizes[-1] or bias != (weight[1],):
            raise ValueError(f"layer {i} has weight {weight} and bias {bias} after "
                             f"{sizes[-1]} inputs")
        sizes.append(int(weight[1]))
    return tuple(sizes)


def init_network(key: jax.Array, config, dtype=None) -> dict[str, list[dict]] | None:
    """Initial weights of every neural term of ``config`` (a
    :class:`~differland.config.ModelConfig`), as ``{term: layers}``; ``None`` if it has none."""
    sizes = config.network_sizes
    if not sizes:
        return None
    keys = jax.random.split(key, len(sizes))
    return {term: init_mlp(k, sizes[term], dtype) for k, term in zip(keys, sorted(sizes),
                                                                     strict=True)}


def network_term(network, term: str) -> list[dict]:
    """The layers of ``term``, with a clear error when they were not passed."""
    if network is None or term not in network:
        raise ValueError(f"the model configuration has a neural {term} term: pass its weights "
                         f"as network[{term!r}] (see differland.processes.neural.init_network)")
    return network[term]

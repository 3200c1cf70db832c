"""The parameter registry and everything derived from it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from differland.params import (
    REGISTRY,
    SPECS,
    VARIANTS,
    ParameterError,
    ParameterSet,
    check_scales,
    constrain,
    default_parameters,
    markdown_table,
    names_for,
    parameters_from_mapping,
    parameters_from_reference_vectors,
    reference_vector_names,
    unconstrain,
)


def test_every_spec_is_consistent():
    for spec in REGISTRY:
        assert 0 < spec.lower < spec.upper, spec.name
        assert spec.lower <= spec.default_value <= spec.upper, spec.name
        assert spec.units and spec.description, spec.name
        assert set(spec.variants) <= set(VARIANTS)


def test_reference_layout_sizes():
    site, global_ = reference_vector_names("site"), reference_vector_names("global")
    assert [len(site[k]) for k in ("dalec_parameters", "initial_pools")] == [30, 8]
    assert [len(global_[k]) for k in ("dalec_parameters", "pheno_parameters",
                                      "initial_pools")] == [31, 2, 7]


@pytest.mark.parametrize("name", ["dalec990_US-Var_rand1", "dalec993_synthetic_rand1"])
def test_reference_vectors_map_to_named_values(golden_dir, name):
    dataset = xr.open_dataset(golden_dir / f"{name}.nc")
    variant = "site" if name.startswith("dalec990") else "global"
    vectors = {key.removesuffix("_vector"): [float(v) for v in
                                             dataset.attrs[key].replace(",", " ").split()]
               for key in ("dalec_parameters_vector", "pheno_parameters_vector",
                           "initial_pools_vector") if key in dataset.attrs}
    params = parameters_from_reference_vectors(vectors, variant)
    for key in params:
        if variant in SPECS[key].reference_slots:
            assert float(params[key]) == pytest.approx(float(dataset[key]), rel=1e-15), key
        else:  # differland-only options take their defaults
            assert float(params[key]) == pytest.approx(SPECS[key].default_value), key


@pytest.mark.parametrize("method", ["logistic", "reference"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_transforms_round_trip(method, variant):
    rng = np.random.default_rng(3)
    names = names_for(variant)
    u = rng.uniform(0.01, 0.99, size=(50, len(names)))
    values = ParameterSet({n: jnp.asarray(SPECS[n].lower * (SPECS[n].upper / SPECS[n].lower)
                                          ** u[:, j]) for j, n in enumerate(names)})
    back = constrain(unconstrain(values, method), method)
    for name in names:
        np.testing.assert_allclose(back[name], values[name], rtol=1e-12)
    extreme = constrain(ParameterSet({n: jnp.asarray([-40.0, 0.0, 40.0]) for n in names}),
                        method)
    for name in names:
        assert np.all(extreme[name] >= SPECS[name].lower)
        assert np.all(extreme[name] <= SPECS[name].upper)


def test_reference_transform_is_the_arctan_log_map():
    x = jnp.asarray(0.7)
    p = constrain(ParameterSet({"canopy_efficiency": x}), "reference").canopy_efficiency
    u = np.arctan(0.7) / np.pi + 0.5
    assert float(p) == pytest.approx(5.0 * 10.0**u, rel=1e-14)


def test_scale_overrides_map_and_invert():
    """``log_excess`` is log-scaled in L - 1: the leaf-fall pulse integral 0.5 ln(L / (L - 1))
    spans orders of magnitude as L -> 1, which a linear map reaches only at its far tail."""
    scales = {"leaf_lifespan": "log_excess", "litter_to_som_rate": "linear"}
    u = np.asarray([0.05, 0.5, 0.95])
    x = ParameterSet({n: jnp.asarray(np.log(u) - np.log1p(-u)) for n in scales})
    values = constrain(x, scales=scales)
    np.testing.assert_allclose(values.leaf_lifespan, 1.0 + 0.001 * 7000.0 ** u, rtol=1e-10)
    np.testing.assert_allclose(values.litter_to_som_rate, 1e-5 + (1e-2 - 1e-5) * u, rtol=1e-10)
    assert SPECS["litter_to_som_rate"].transform_scale == "log"  # the override took effect
    back = unconstrain(values, scales=scales)
    for name in scales:
        np.testing.assert_allclose(back[name], x[name], rtol=1e-8, atol=1e-12)
    check_scales(scales)
    with pytest.raises(ParameterError, match="unknown scale 'cubic'"):
        check_scales({"leaf_lifespan": "cubic"})
    with pytest.raises(ParameterError, match="lower bound 0.2 is not > 1"):
        check_scales({"autotrophic_respiration_fraction": "log_excess"})
    with pytest.raises(ParameterError, match="unknown parameter name 'leaf_life_span'"):
        check_scales({"leaf_life_span": "log"})


def test_logistic_gradient_is_finite_and_positive():
    grad = jax.grad(lambda x: constrain(ParameterSet({"leaf_lifespan": x})).leaf_lifespan)
    assert 0 < float(grad(jnp.asarray(0.3))) < np.inf


def test_defaults_and_mapping_errors():
    defaults = default_parameters("site")
    assert defaults.names == names_for("site")
    assert "sif_alpha" not in defaults and "sif_alpha" in default_parameters("global")
    params = parameters_from_mapping({"leaf_lifespan": 2.0}, "site")
    assert float(params.leaf_lifespan) == 2.0
    assert float(params.canopy_efficiency) == SPECS["canopy_efficiency"].default_value
    with pytest.raises(ParameterError, match="unknown parameter name.*leaf_life_span"):
        parameters_from_mapping({"leaf_life_span": 2.0}, "site", source="p.json")
    with pytest.raises(ParameterError, match="canopy_efficiency = 80.*outside its bounds"):
        parameters_from_mapping({"canopy_efficiency": 80.0}, "site")
    with pytest.raises(ParameterError, match="not finite"):
        parameters_from_mapping({"canopy_efficiency": float("nan")}, "site")
    with pytest.raises(ParameterError, match="unknown model variant"):
        names_for("regional")
    with pytest.raises(ParameterError, match="unknown parameter"):
        defaults.replace(not_a_parameter=1.0)
    with pytest.raises(AttributeError, match="immutable"):
        defaults.leaf_lifespan = 3.0


def test_parameter_set_is_a_pytree():
    params = default_parameters("global")
    doubled = jax.tree.map(lambda x: 2 * x, params)
    assert isinstance(doubled, ParameterSet)
    assert float(doubled.leaf_lifespan) == 2 * float(params.leaf_lifespan)
    assert len(jax.tree.leaves(params)) == len(names_for("global"))


def test_markdown_table_lists_every_parameter():
    table = markdown_table()
    for spec in REGISTRY:
        assert f"`{spec.name}`" in table
    assert "sif_alpha" not in markdown_table("site")


def test_docs_parameter_table_is_current():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"
    assert markdown_table() in docs.read_text(), "regenerate docs/parameters.md"

"""Imports flow one way through the package, and heavy data libraries stay at the edges."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "differland"

# Lower layers never import higher ones.
LAYERS = [
    {"differland._pytree", "differland.constants", "differland.precision"},
    {"differland.params"},
    {"differland.forcing", "differland.state"},
    {"differland.processes"},
    {"differland.options", "differland.config"},
    {"differland.model"},
    {"differland.observations", "differland.likelihood", "differland.metrics"},
    {"differland.spatial", "differland.calibrate", "differland.sensitivity"},
    {"differland.io", "differland.plots", "differland.world"},
    {"differland.cli", "differland.workflows", "differland.spatial_workflows",
     "differland.grid_workflows", "differland.posterior_workflows",
     "differland.variational_workflows"},
]
EDGE_LIBRARIES = {"xarray", "pandas", "netCDF4", "h5netcdf", "rioxarray", "geopandas", "arviz"}
EDGE_MODULES = ("differland.io", "differland.world", "differland.grid_workflows",
                "differland.posterior_workflows", "differland.variational_workflows")
"""Modules that read or write datasets: the only ones that may use the data libraries."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for index, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    return None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module != "differland":
            assert _layer(module) is not None, f"{module} is not placed in LAYERS"


def test_imports_flow_downward():
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path):
            other = _layer(imported)
            if other is not None:
                assert other <= own, f"{module} imports higher-layer {imported}"


def test_data_libraries_only_in_io():
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        roots = {name.split(".")[0] for name in _imports(path)}
        if not module.startswith(EDGE_MODULES):
            assert not roots & EDGE_LIBRARIES, f"{module} imports {roots & EDGE_LIBRARIES}"
        if not module.startswith("differland.spatial"):
            assert "flax" not in roots, f"{module} imports flax"

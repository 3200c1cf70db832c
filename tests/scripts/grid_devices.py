"""Run in a fresh process: the grid loss, its gradient and a short training on a mesh of
several devices, printed as JSON (compared by tests/test_grid.py with one device).

    python grid_devices.py WORLD.zarr N_DEVICES [PROCESS_ID N_PROCESSES PORT]
"""

import json
import sys

import jax

world, n_devices = sys.argv[1], int(sys.argv[2])
if len(sys.argv) > 3:
    process_id, n_processes, port = map(int, sys.argv[3:6])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=n_processes,
                               process_id=process_id)
else:
    jax.config.update("jax_num_cpu_devices", n_devices)

import numpy as np  # noqa: E402

from differland.grid_workflows import grid_config_for, load_problem  # noqa: E402
from differland.io import read_grid_driver  # noqa: E402
from differland.spatial.grid import (  # noqa: E402
    batch_specs,
    full_objective,
    new_network,
    pixel_mesh,
    place,
    replicate,
    train_grid,
)

driver = read_grid_driver(world)
config = grid_config_for(driver, {"hidden": 8, "max_iterations": 4, "eval_every": 2,
                                  "batch_pixels": 64})
problem, standardizer, _ = load_problem(driver, config)
mesh = pixel_mesh(n_devices if len(sys.argv) <= 3 else None)
(graphdef, state), hybrid = new_network(standardizer.n_inputs, config, 0)
trainable = {"net": state, "hybrid": hybrid}
cells = np.arange(problem.n_pixels - problem.n_pixels % 4)  # the same cells on 1, 2, 4 devices
objective, batch = full_objective(problem, config, graphdef, cells)
loss, grads = jax.jit(jax.value_and_grad(objective.loss))(
    replicate(trainable, mesh), place(batch, batch_specs(batch), mesh))
trained = train_grid(problem, config, (graphdef, state), hybrid, 0, mesh, progress=False)
leaves = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), grads))
weights = jax.tree.leaves(trained.state)
print(json.dumps({"devices": int(mesh.devices.size), "loss": float(loss),
                  "grad_norm": float(np.sqrt(sum(np.sum(g**2) for g in leaves))),
                  "grad_first": [float(x) for x in np.ravel(leaves[0])[:8]],
                  "weights": [float(np.sum(np.asarray(w))) for w in weights]}))

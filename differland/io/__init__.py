"""Input and output: site and grid drivers, NetCDF writing, parameter files, the example driver.

This package is the only part of differland that imports xarray, pandas or netCDF4. Every
problem with an input file raises :class:`DriverError` with a one-line message
``"<path>: <variable>: <problem>"``.
"""

from differland.io._files import (
    NETCDF_SIGNATURES,
    check_output_file,
    check_writable_location,
    read_json,
    remove_stale_temporaries,
    write_atomically,
    write_json,
    written_by_differland,
)
from differland.io.errors import DriverError, OutputError, output_error
from differland.io.example import example_site_dataset, write_example_site_driver
from differland.io.grid import (
    PIXEL_OBSERVATIONS,
    GridDriver,
    GridObservation,
    read_grid_driver,
)
from differland.io.netcdf import (
    cf_time_coordinate,
    read_parameter_values,
    write_dataset,
    write_parameter_json,
)
from differland.io.results import ensemble_dataset, simulation_dataset, state_variable_name
from differland.io.site import (
    OBSERVATION_VARIABLES,
    Observation,
    SiteDriver,
    calibration_split_index,
    read_site_driver,
    read_sites_rows,
    reference_climate,
)

__all__ = [
    "NETCDF_SIGNATURES",
    "OBSERVATION_VARIABLES",
    "PIXEL_OBSERVATIONS",
    "DriverError",
    "GridDriver",
    "GridObservation",
    "OutputError",
    "Observation",
    "SiteDriver",
    "calibration_split_index",
    "check_output_file",
    "check_writable_location",
    "cf_time_coordinate",
    "example_site_dataset",
    "read_json",
    "read_grid_driver",
    "read_parameter_values",
    "output_error",
    "read_site_driver",
    "read_sites_rows",
    "reference_climate",
    "remove_stale_temporaries",
    "simulation_dataset",
    "ensemble_dataset",
    "state_variable_name",
    "write_dataset",
    "write_atomically",
    "write_example_site_driver",
    "write_json",
    "write_parameter_json",
    "written_by_differland",
]

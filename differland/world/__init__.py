"""The twin world: a synthetic land surface on real static maps, with known parameters."""

"""Calibration: gradient descent with optax (``gradient``) and site problems (``site``)."""

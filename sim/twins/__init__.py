"""Simulated personalities of the driver models, one module per vendor family.

`sim.instruments.SIM_MODELS` maps registry driver names to these classes.
"""

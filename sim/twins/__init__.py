"""Simulated personalities of the driver models, one module per vendor family.

Each twin answers its model's command set (long and short SCPI forms, error queue, IDN, quirks)
and reads and drives the shared `sim.bench.Bench`. `scpi` holds the SCPI parser and base twin;
`korad` the terminator-less serial supply. `sim.instruments.SIM_MODELS` maps registry driver
names to these classes.
"""

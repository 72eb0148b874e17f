"""Instrument models: one class per instrument, methods in the bench's language.

Owns the SCPI base class (`scpi`), the DMM and supply capability interfaces with their models
(`dmm`, `psu`), the Korad serial supply (`korad`), the electronic load (`load`), SMU (`smu`),
oscilloscope (`scope`) and relay multiplexer (`mux`) interfaces with their models, and what
those four share (`confirm`: confirmed settings, verified safe state). Every command string of
a model lives in its class. May import `drivers.errors` and `drivers.transport`; never
`station` or `sim`.
"""

"""Instrument models: one class per instrument, methods in the bench's language.

Owns the SCPI base class (`scpi`), the DMM and supply capability interfaces with their models
(`dmm`, `psu`) and the Korad serial supply (`korad`). Every command string of a model lives in
its class. May import `drivers.errors` and `drivers.transport`; never `station` or `sim`.
"""

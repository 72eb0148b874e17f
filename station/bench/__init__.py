"""The instruments of one run: built from station.yaml, opened, interrupted, and left safe.

Owns `InstrumentSet` (`instruments`): creating drivers, opening them in order, `interrupt()`
for a stopped phase, `safe_state()` verified on every exit path, and closing. May import
`drivers` (the public names of its packages) and `station.records`; never the engine.
"""

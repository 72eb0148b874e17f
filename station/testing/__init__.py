"""Support for testing stations and procedures.

Owns the fault points the crash tests use (`faultpoints`: inert unless `STATION_FAULT_POINT` is
set). `faultpoints` imports only `station.records`, so the storage and reporting layers may call
it; this package's `__init__` imports nothing, so importing it costs nothing.
"""

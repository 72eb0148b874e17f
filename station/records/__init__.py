"""What happened: the data every other layer speaks.

Owns the outcomes (`outcomes`), the record dataclasses of a run, its phases, measurements, logs
and attachments (`model`), and the `RunListener` interface through which the engine tells the
journal, the console and the uploader what is happening (`listener`). The bottom layer: it
imports nothing from `station` but itself, so every other layer may import it.
"""

"""The `station` command: argument parsing, one module per command, and the operator console.

The top layer: it may import every other `station` layer, `drivers` and (for `--sim`) `sim`;
nothing imports it. `main` holds the parser and the shared exit codes; `upload` the TofuPilot
commands; `console` what the operator sees during a run.
"""

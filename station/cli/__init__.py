"""The `station` command: argument parsing, one module per command, and the operator console.

The top layer: it may import every other `station` layer, `drivers` and (for `--sim`) `sim`;
nothing imports it. `main` holds the parser and the dispatch (each command's module is imported
only when it runs); `common` the exit codes, the usage error, config loading, path display and
the simulated bench, all public; `run` (with `loop` for `--loop`), `check`, `listing`
(`station list`), `history`, `sim`, `serve` (the operator page's server, `station.web`) and
`upload` (`upload`, `runs`, `prune`) one command each; `console` what the operator sees during a
run.
"""

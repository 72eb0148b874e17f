"""The production line: test unit after unit on one open bench, whoever is at the station.

Owns the loop engine `Line` (`session`: scans checked against the procedure's pattern,
instruments opened once and safe-stated between units, counters, recent units, uploads in the
background) shared by `station run --loop` and `station serve`; how a phase's `run.prompt()`
reaches the operator (`prompts`: the terminal, the operator page, an answers file); and the
run's events as dicts on a thread-safe bus (`events`: the NDJSON of `station run --events`, the
page's live stream). May import `station.records`, `station.authoring`, `station.config`,
`station.bench`, `station.engine`, `station.storage`, `station.tofupilot` and
`station.testing`; only `station.cli` and `station.web` import it. Never imports `sim`: the
simulated bench is handed in by the command line (`bench=`).
"""

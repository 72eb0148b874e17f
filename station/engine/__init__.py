"""Running a procedure: injection, limits, retries, timeouts, teardown, outcomes.

Owns the `Runner` (`runner`), the worker thread a phase runs on and how it is stopped
(`worker`), and turning what a phase did into records (`evaluate`). It reports through the
`RunListener` interface and so never imports storage, reporting or the CLI. May import
`station.authoring`, `station.records` and `station.bench`.
"""

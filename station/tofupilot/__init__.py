"""TofuPilot reporting: every recorded run reaches TofuPilot exactly once.

Owns the v2 run-create body built from a record (`payload`), the httpx client with typed errors
and a scrubbed key (`client`), the outbox that uploads recorded runs and keeps them queued or
parked (`outbox`), its per-run state file `upload.json` (`upload_state`), the claim that keeps
two processes off one run (`claim`), the retry policy (`policy`), the steps of one upload
(`steps`), TofuPilot's id of each procedure, resolved by name and remembered (`resolve`), the
legacy v1 run (`v1`), and `station check`'s TofuPilot part (`check`). May import
`station.storage` and `station.records`; never the engine or the CLI.
"""

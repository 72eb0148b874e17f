"""The run directory on disk: the journal written as the run happens, and `run.json` at its end.

Owns the append-only `journal.jsonl`, the atomic `run.json`, attachments, and recovery of a run
whose process died (`journal`), the background fsync (`syncer`), the disk space set aside for
a disk that fills mid-run (`reserve`), the run directory's lock (`runlock`) and the index of
runs not uploaded yet (`pending`). May import `station.records` and
`station.testing.faultpoints`; nothing above it.
"""

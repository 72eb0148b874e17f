"""station.yaml and procedure modules, read and checked before any instrument is touched.

Owns the typed model of a bench (`model`), YAML read with line numbers (`yaml_source`), the
`file:line: field: problem` error format (`errors`), and loading a procedure module with its
load-time checks (`procedure_loader`). May import `station.authoring` and `station.records`.
"""

"""The benchmark cases. Each module has `run(settings) -> CaseResult` (the parent side); code that
runs inside a measured subprocess is imported lazily so each child loads only what it measures."""

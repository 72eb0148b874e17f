"""What a procedure author writes with: `@phase`, `@measure`, limits and the injected helpers.

Owns the decorators and the `Phase`/`Procedure` objects they build (`procedure`), measurement
specs and their validators (`limits`), the helpers a phase asks for by name, `measurements`,
`log`, `dut` and `run` (`helpers`), and the cancel token a stopped phase sees (`cancel`).
May import `station.records` only; it knows nothing of threads, files, instruments or HTTP.
"""

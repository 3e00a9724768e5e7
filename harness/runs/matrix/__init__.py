"""A matrix of runs: revision x kernel source x machine x VMM policy, from a YAML file.

    name: nightly
    description: what it covers
    defaults: {source: linux-source-6.1, machine: virt-gicv3, policy: every-exit}  # + tests
    cells:
      - revision: [upstream, v4, v5, v6]      # a list expands (cross product)
      - {revision: v6, policy: eintr-only, expect: fail}
      - {revision: v5, source: linux-source-6.12, expect: error, expect_reason: does not apply}
      - {revision: upstream, source: linux-image-6.1.0-56-arm64, machine: virt-gicv3-debian}

Three modules: `spec` (the file format: Cell, Matrix, load, cell names), `outcome`
(a cell's outcome and reason from its results.json, CellResult, the tests that
changed status between repeated runs, the table) and `scheduler` (Tokens, Runner,
run: kernels prepared in one thread, boots in parallel, matrix.json).
"""

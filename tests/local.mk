# tests/ — virtmem tests and benchmarks

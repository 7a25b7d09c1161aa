"""The training engine: the one loop and what it runs on (budget clock, checkpoints, evaluations,
seeding, signals, energy, data parallelism, profiling)."""

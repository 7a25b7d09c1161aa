"""The run directory and its files: run.json (schema, provenance), metrics.jsonl records,
checkpoint files, samples, TensorBoard logs, atomic writes and the per-stage writer lock."""

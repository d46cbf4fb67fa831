"""The run directory: `layout` (file names), `record` (run.json), `checkout` (paths stored relative to the
checkout), `lock` and `predictions` (the per-sample file: written, read, merged, compacted)."""

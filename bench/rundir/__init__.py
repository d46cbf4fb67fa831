"""The run directory: `layout` (file names), `record` (run.json), `checkout` (paths stored relative to the
checkout), `lock`, `predictions` (the per-sample file: written, read, merged, compacted) and `outcome` (the
failure summary)."""

"""The run directory: `layout` (file names), `record` (run.json), `checkout` (paths stored relative to the
checkout), `lock`, `predictions` (the per-sample file: written, read, merged, compacted), `outcome` (the failure
summary), `session` (what `bench run` and `bench score` share: claim, check, record, merge, release) and
`declared` (a results directory's runs.toml: read by the report, written by ablations)."""

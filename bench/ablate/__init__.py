"""`bench ablate NAME`: ablations as small files (a base configuration plus variants as overrides), each cell
an ordinary run directory keyed by its exact configuration, assembled into a table, plots and a report.

Modules: `load` (the files, budgets, strict keys), `grid` (variants as a product of axes), `spec` (the parsed
ablation, variants resolved), `kinds` (the registry of cell kinds), `cells` (keys, directories, --only), `driver`
(reuse, make, --resume, assemble), `evaluate` (kind "eval": cells evaluated through the runner), `train` (kind
"train"), `pca` (kind "pca": the VAE latent measurement), `table`, `verdicts` and `report` (the outputs).
Definitions: `bench/ablate/defs/NAME.toml`.
"""

from bench.ablate.load import ablation_names, load_ablation

__all__ = ["ablation_names", "load_ablation"]

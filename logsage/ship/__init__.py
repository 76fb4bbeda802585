"""Ship a checkpoint: `select` it, re-`evaluate` it with the real model, `export` (adapter or streamed `merge`), `prune` the rest."""

"""One module per log format: each defines `FORMAT`, `claims(path, head)` and `read(path, ctx)` (see `base`)."""

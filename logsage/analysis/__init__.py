"""Analysis across runs: `tune` (rule recommendation with leave-one-run-out validation) and `cost` (GPU-hours, money)."""

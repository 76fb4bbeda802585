"""Training: `logsage train` on Hugging Face Trainer + peft LoRA, keeping a checkpoint at every evaluation.

Submodules: `config` (the run configuration, YAML and presets; no torch),
`data` (instruction data to token ids and labels; no torch at import), `recipe`
(the Trainer run), `callback` (live early-stopping rules), `per_example` (the
per-example eval loss writer), `manifest` (logsage_run.json) and `tiny` (a tiny
local Qwen2 model for tests and demos). Nothing heavy is imported here.
"""

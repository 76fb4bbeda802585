"""The streaming LoRA merge: base safetensors shards + a peft LoRA adapter -> merged, sharded safetensors.

The merge never holds the model in memory. It reads the base's shard headers,
plans the output layout (every tensor's name, dtype, shape and byte offsets are
known before a byte of data is read), then writes each output shard tensor by
tensor: a tensor the adapter does not touch is copied (or cast) in chunks, a
targeted weight is read alone, merged in float32 and cast to the output dtype.
Peak memory is about the largest single weight in float32 plus the adapter (a
7B model merges in well under 2 GB), whatever the size of the shards.

The arithmetic is peft's own (peft 0.13 - 0.21, `LoraLayer.get_delta_weight`,
`DoraLinearVariant.merge_unsafe`), so the output equals `merge_and_unload()`:

* delta = (B @ A) * scaling, with scaling = lora_alpha / r, or lora_alpha / sqrt(r)
  with `use_rslora` (per-module r and alpha from `rank_pattern` / `alpha_pattern`);
  transposed for `fan_in_fan_out` layers (GPT-2's Conv1D);
* embedding LoRA: delta = (lora_embedding_B @ lora_embedding_A).T * scaling;
* DoRA: W' = m / ||W + delta||_row * (W + delta), the norm taken over the input
  dimension (one value per output row), as peft's `DoraLinearLayer.get_weight_norm`;
* `lora_bias`: b' = b + lora_B.bias * scaling;
* `modules_to_save`: the adapter's copy replaces the base tensor (a resized
  embedding / lm_head updates `vocab_size`).

Everything else an adapter may hold (other LoRA variants, trainable tokens,
layer replication...) is refused by name rather than dropped: a merge that
silently ignores part of an adapter is the failure this module exists to prevent.
Tied input/output embeddings are untied when the adapter changes either of them
(the unmerged peft model leaves the other one as it was).

torch and safetensors are imported inside the functions.

The package: `tensors` (reading safetensors models), `plan` (adapter, config checks,
output layout: nothing is written) and `write` (the arithmetic, the shard writer,
`merge_streaming`, `static_check`). The public names are re-exported here.
"""

from logsage.core.safetensors import TensorEntry
from logsage.ship.merge.plan import (
    AdapterPlan,
    LoraModule,
    MergeReport,
    adapter_weights_file,
    config_dtype,
    load_adapter_state,
    plan_adapter,
    qlora_warning,
    quantization_of,
    read_adapter_config,
    read_config,
    refuse_quantized_base,
    resolve_dtype,
)
from logsage.ship.merge.tensors import (
    DEFAULT_MAX_SHARD_BYTES,
    DTYPE_NAMES,
    INDEX_NAME,
    base_entries,
    read_header,
    read_tensor,
    weight_files,
)
from logsage.ship.merge.write import merge_streaming, merged_weight, static_check

__all__ = ["AdapterPlan", "DEFAULT_MAX_SHARD_BYTES", "DTYPE_NAMES", "INDEX_NAME", "LoraModule", "MergeReport",
           "TensorEntry", "adapter_weights_file", "base_entries", "config_dtype", "load_adapter_state",
           "merge_streaming", "merged_weight", "plan_adapter", "qlora_warning", "quantization_of",
           "read_adapter_config", "read_config", "read_header", "read_tensor", "refuse_quantized_base",
           "resolve_dtype", "static_check", "weight_files"]

//! The spellings people bring from PyTorch, Lightning, Hugging Face's
//! Trainer and DeepSpeed configs, with the dtl form they mean: the help of
//! an unknown setting or name, before edit-distance guesses (which cannot
//! see that `batch_size` is `micro_batch`).

/// The dtl form of a `train` or `data` setting named as another tool
/// names it.
pub fn setting(block: &str, key: &str) -> Option<&'static str> {
    let block = block.split_whitespace().next().unwrap_or_default();
    Some(match (block, key) {
        (
            "train",
            "batch_size" | "per_device_train_batch_size" | "train_micro_batch_size_per_gpu",
        ) => "dtl calls the rows of one forward pass `micro_batch` (`micro_batch = 32`); a step's batch is micro_batch × accumulate × the data-parallel ranks",
        ("train", "train_batch_size" | "global_batch_size") => {
            "a step's batch is micro_batch × accumulate × the data-parallel ranks: set `micro_batch` and `accumulate`"
        }
        ("train", "gradient_accumulation_steps" | "accumulate_grad_batches") => {
            "`accumulate = 4`: micro-batches summed into each optimizer step"
        }
        (
            "train",
            "max_grad_norm" | "gradient_clip_val" | "gradient_clipping" | "clip_grad_norm",
        ) => "`clip = norm(1.0)` clips the global gradient norm (`clip = value(0.5)` each value)",
        ("train", "lr" | "learning_rate") => {
            "the learning rate is the optimizer's: `optimizer = adamw(lr: 3e-4)`"
        }
        ("train", "weight_decay" | "betas" | "momentum") => {
            "an optimizer argument: `optimizer = adamw(lr: 3e-4, weight_decay: 0.01)`"
        }
        ("train", "epochs" | "num_train_epochs" | "max_epochs") => {
            "dtl counts optimizer steps: `steps = 1000` (an epoch is the training rows / a step's batch)"
        }
        ("train", "max_steps" | "train_iters") => "`steps = 1000`",
        ("train", "warmup_steps" | "num_warmup_steps") => "`warmup = 100`",
        ("train", "lr_scheduler" | "lr_scheduler_type" | "scheduler") => {
            "`schedule = cosine` (or `step(...)`, `linear`, `one_cycle`, `constant_with_warmup(...)`)"
        }
        ("train", "fp16" | "bf16" | "amp" | "mixed_precision") => {
            "`precision = bf16` (or `fp16`, with a loss scale; `tf32`; `fp32`)"
        }
        ("train", "eval_steps" | "val_check_interval" | "eval_interval") => "`eval_every = 100`",
        ("train", "save_steps" | "checkpoint_interval") => "`checkpoint_every = 500`",
        ("train", "gradient_checkpointing" | "activation_checkpointing" | "checkpoint_activations") => {
            "`recompute = blocks` (each module instance and `repeat` copy of the model), or `recompute = all`"
        }
        ("parallel", "zero_stage" | "zero_optimization" | "stage" | "zero") => {
            "`shard = optimizer` is ZeRO-1, `shard = gradients` ZeRO-2 (ZeRO-3, `shard = parameters`, is not there yet)"
        }
        ("parallel", "sharding_strategy" | "fsdp" | "hybrid_shard" | "data_parallel_shard_degree") => {
            "`shard = optimizer | gradients`, and `shard_group = k` to shard within groups of k replicas (FSDP's HYBRID_SHARD)"
        }
        ("data", "batch_size") => "the batch is the `train` block's `micro_batch`",
        ("data", "num_workers" | "pin_memory" | "prefetch_factor") => {
            "nothing to set: batches are prepared on a data thread, a few steps ahead"
        }
        ("data", "transform" | "transforms") => {
            "transforms are settings of the data block: `random_crop`, `horizontal_flip`, `mean` and `std`"
        }
        ("data", "validation_split" | "val_split") => "`valid = 0.1`",
        _ => return None,
    })
}

/// The dtl name of a choice (`precision = amp`) named as another tool
/// names it.
pub fn choice(what: &str, name: &str) -> Option<&'static str> {
    Some(match (what, name) {
        ("precision", "amp" | "mixed" | "fp16_mixed" | "float16" | "half") => {
            "`fp16` is float16 with a loss scale (torch.amp with a GradScaler); `bf16` needs none"
        }
        ("precision", "bfloat16" | "bf16_mixed") => "`bf16`",
        ("precision", "float32" | "full" | "fp64" | "float64") => {
            "`fp32` (dtl trains in float32 at most)"
        }
        ("recompute mode", "full" | "true" | "on" | "selective") => {
            "`blocks` recomputes the model's module instances and `repeat` copies; `all` the layers between them too"
        }
        ("recompute mode", "false" | "off") => "`none`",
        ("optimizer", "AdamW" | "Adam" | "SGD") => {
            "optimizer names are lower case: `adamw`, `adam`, `sgd`"
        }
        ("loss", "CrossEntropyLoss" | "ce" | "nll_loss") => {
            "`cross_entropy` (on logits) or `nll` (on log-probabilities)"
        }
        ("loss", "MSELoss" | "l2") => "`mse`",
        ("schedule", "CosineAnnealingLR" | "cosine_annealing") => "`cosine`",
        _ => return None,
    })
}

/// The dtl layer a PyTorch spelling means (`nn.Linear`, `torch.nn.ReLU`,
/// `F.gelu`, `LayerNorm`), when `is_layer` knows it.
pub fn layer(name: &str, is_layer: impl Fn(&str) -> bool) -> Option<String> {
    let bare = [
        "torch.nn.functional.",
        "torch.nn.",
        "nn.functional.",
        "nn.",
        "F.",
        "torch.",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    let dtl = match bare {
        "MultiheadAttention" | "multi_head_attention_forward" => "attention".to_string(),
        "BatchNorm1d" | "BatchNorm2d" | "SyncBatchNorm" => "batch_norm".to_string(),
        "InstanceNorm1d" | "InstanceNorm2d" => "instance_norm".to_string(),
        "RMSNorm" => "rms_norm".to_string(),
        "ReLU" => "relu".to_string(),
        "GELU" => "gelu".to_string(),
        "SiLU" => "silu".to_string(),
        "ELU" => "elu".to_string(),
        "LeakyReLU" => "leaky_relu".to_string(),
        "ConvTranspose2d" => "conv_transpose2d".to_string(),
        _ => snake_case(bare),
    };
    if dtl == name || !is_layer(&dtl) {
        return None;
    }
    Some(format!(
        "`{name}` is PyTorch's spelling; dtl's layer is `{dtl}`"
    ))
}

/// `LayerNorm` → `layer_norm`, `MaxPool2d` → `max_pool2d`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let after_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            if after_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_layer_names_map_to_dtl_layers() {
        let known = |n: &str| {
            [
                "linear",
                "layer_norm",
                "max_pool2d",
                "relu",
                "attention",
                "conv2d",
                "adaptive_avg_pool2d",
            ]
            .contains(&n)
        };
        let dtl =
            |name: &str| layer(name, known).map(|help| help.split('`').nth(3).unwrap().to_string());
        assert_eq!(dtl("nn.Linear").as_deref(), Some("linear"));
        assert_eq!(dtl("torch.nn.LayerNorm").as_deref(), Some("layer_norm"));
        assert_eq!(dtl("nn.MaxPool2d").as_deref(), Some("max_pool2d"));
        assert_eq!(dtl("F.relu").as_deref(), Some("relu"));
        assert_eq!(dtl("nn.ReLU").as_deref(), Some("relu"));
        assert_eq!(dtl("nn.MultiheadAttention").as_deref(), Some("attention"));
        assert_eq!(
            dtl("nn.AdaptiveAvgPool2d").as_deref(),
            Some("adaptive_avg_pool2d")
        );
        assert_eq!(dtl("Conv2d").as_deref(), Some("conv2d"));
        assert_eq!(dtl("linear"), None, "a dtl name is not foreign");
        assert_eq!(dtl("nn.Transformer"), None, "no dtl layer of that name");
    }
}

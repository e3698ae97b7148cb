"""What one optimizer step covers, and `train.batch_size=auto`: the micro-batch a token budget allows.

Fingerprint examples are short (a 16-token key and a few response tokens), so on a GPU the cost of a micro-batch of
16 is all kernel launches: the budget below fills the device instead. On a CPU the per-micro-batch overhead is small
next to the GEMMs, so the budget only needs enough work per micro-batch to hide it, and stays small for SmolLM2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

# Estimates of training memory, in bytes: fp32 weights, gradients and the two AdamW moments per parameter; per token,
# the activations kept for the backward pass of each layer (norm inputs, q/k/v, attention output, the SwiGLU MLP's
# three intermediates) in units of hidden size, and the logits with their fp32 copy, softmax and gradient.
STATE_BYTES_PER_PARAM = 16
ACTIVATIONS_PER_HIDDEN = 24
LOGIT_BYTES_PER_VOCAB = 16
# Share of the free memory the budget spends: the allocator's fragmentation, the recall check and whatever the
# estimate misses keep the rest.
MEMORY_SHARE = 0.6
# On a CPU, about this much GEMM work (FLOPs, 6 x parameters x tokens) per micro-batch hides the per-micro-batch
# overhead; larger micro-batches only add memory. SmolLM2 (135M): 308 tokens, 18 of its 17-token examples.
CPU_FLOPS_PER_MICRO_BATCH = 2.5e11


@dataclass(frozen=True)
class DeviceBudget:
    type: str  # "cuda" or "cpu"
    free_bytes: int
    activation_bytes: int = 4  # 2 under bf16/fp16 mixed precision


@dataclass(frozen=True)
class ModelSize:
    params: int
    hidden: int
    layers: int
    vocab: int


def token_budget(device: DeviceBudget, model: ModelSize) -> int:
    """The most tokens one micro-batch should hold on this device."""
    state = model.params * STATE_BYTES_PER_PARAM
    per_token = (model.layers * model.hidden * ACTIVATIONS_PER_HIDDEN * device.activation_bytes
                 + model.vocab * LOGIT_BYTES_PER_VOCAB)
    tokens = int(max(0.0, device.free_bytes * MEMORY_SHARE - state) // per_token)
    if device.type == "cpu":
        tokens = min(tokens, int(CPU_FLOPS_PER_MICRO_BATCH // (6 * model.params)))
    return tokens


def auto_micro_batch(device: DeviceBudget, model: ModelSize, seq_len: int) -> int:
    """Examples of `seq_len` tokens per micro-batch: the token budget's worth, at least one."""
    return max(1, token_budget(device, model) // seq_len)


def device_budget(device: torch.device, dtype: torch.dtype) -> DeviceBudget:
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = _available_ram()
    return DeviceBudget(device.type, free, 2 if dtype in (torch.bfloat16, torch.float16) else 4)


def model_size(model) -> ModelSize:
    c = model.config
    c = getattr(c, "text_config", None) or c
    return ModelSize(sum(p.numel() for p in model.parameters()), c.hidden_size, c.num_hidden_layers, c.vocab_size)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass(frozen=True)
class Plan:
    micro_batch: int  # examples per micro-batch and process
    accumulation: int  # micro-batches per optimizer step and process
    steps_per_epoch: int


def plan(n: int, world: int, batch_size: int, grad_accum: int | None, fingerprints_per_step: int | None) -> Plan:
    """How `n` fingerprints split into micro-batches and optimizer steps on `world` processes.

    With fingerprints_per_step K the micro-batch never exceeds a process's share of K, and a step holds at least K
    fingerprints (exactly K when K divides into whole micro-batches); the Trainer also steps at each epoch's end.
    With neither K nor grad_accum, a step covers the whole set.
    """
    share = math.ceil(n / world)  # a micro-batch larger than a process's share of the set only wastes memory
    if fingerprints_per_step is not None:
        per_process = math.ceil(min(fingerprints_per_step, n) / world)
        micro = min(batch_size, per_process)
        accum = math.ceil(per_process / micro)
    else:
        micro = min(batch_size, share)
        accum = math.ceil(share / micro) if grad_accum is None else grad_accum
    batches = math.ceil(n / (micro * world))  # micro-batches per process per epoch
    return Plan(micro, accum, math.ceil(batches / accum))


def epoch_steps(args, state) -> int:
    """Optimizer steps per epoch of a started Trainer (what per-epoch hooks count on when a stop can end an epoch)."""
    return max(1, state.max_steps // max(1, round(args.num_train_epochs)))

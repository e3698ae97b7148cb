"""The `engine` group: plain torch or a DeepSpeed config handed to the HF Trainer, checked before any work starts.

The DeepSpeed JSON lives in conf/engine/*.yaml. Optimizer and scheduler stay with the HF Trainer (torch AdamW, linear
decay), so no config names a DeepSpeed optimizer and no fused/cpu Adam C++ op is compiled; offload configs set
`zero_force_ds_cpu_optimizer: false` for the same reason. On CPU the communication backend is gloo.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from omegaconf import DictConfig, OmegaConf

from oml_exp.config import ConfigError
from oml_exp import distributed


def deepspeed_config(engine: DictConfig, device: torch.device, dtype: torch.dtype) -> dict | None:
    """The DeepSpeed config for the Trainer, or None for engine=torch; raises ConfigError naming the fix."""
    check(engine, device, dtype)
    if engine.deepspeed is None:
        return None
    if device.type == "cpu":
        _cpu_deepspeed()
    distributed.single_process_env()
    return OmegaConf.to_container(engine.deepspeed, resolve=True)


def trainer_settings(device: torch.device, dtype: torch.dtype, ds: dict | None, seed: int, log_level: str,
                     schedule: str = "linear") -> dict:
    """The TrainingArguments every training in oml-exp shares (the finetune stage, the attacks that train): the
    engine, precision and optimizer, the learning rate from its full value with no warm-up (then linear decay or
    constant), a log row per step, nothing reported."""
    return dict(
        lr_scheduler_type=schedule,
        warmup_steps=0,
        logging_steps=1,
        seed=seed,
        data_seed=seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        deepspeed=ds,
        optim=optimizer(device, ds),
        use_cpu=device.type == "cpu",
        ddp_backend="gloo" if device.type == "cpu" and distributed.world_size() > 1 else None,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        report_to="none",
        disable_tqdm=not distributed.is_main(),
        log_level=log_level,
        log_level_replica="error",
    )


def optimizer(device: torch.device, ds: dict | None) -> str:
    """Fused AdamW on CUDA (one kernel per step instead of several per tensor), unless DeepSpeed moves the
    optimizer states to the CPU; the same update either way."""
    zero = (ds or {}).get("zero_optimization") or {}
    offloaded = (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme")
    return "adamw_torch_fused" if device.type == "cuda" and not offloaded else "adamw_torch"


def check(engine: DictConfig, device: torch.device, dtype: torch.dtype) -> None:
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("model.dtype=fp16 cannot train on CPU; use model.dtype=auto (fp32 on CPU)")
    if engine.deepspeed is None:
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"engine={engine.name} needs DeepSpeed: pip install deepspeed (or use engine=torch)")
    if _offloads_to(engine.deepspeed, "nvme") and device.type == "cpu":
        raise ConfigError(f"engine={engine.name} offloads to NVMe, which DeepSpeed supports only with a GPU; "
                          "use engine=deepspeed_zero3_offload (CPU offload) or engine=torch")


def _offloads_to(ds: DictConfig, target: str) -> bool:
    zero = ds.get("zero_optimization") or {}
    return any((zero.get(k) or {}).get("device") == target for k in ("offload_optimizer", "offload_param"))


def _cpu_deepspeed() -> None:
    # Must precede the first deepspeed import; the empty op table stops it from compiling C++ ops with g++.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {}

"""The finetune stage and its parts: data, engines, augmentation, distributed helpers."""

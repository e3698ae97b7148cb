"""Left padding, shared by every stage that feeds the model a batch of prompts of different lengths."""

from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and position_ids of left-padded sequences, so every sequence ends in the last
    column; positions count real tokens only, so a padded sequence sees the positions it would alone."""
    width = max(len(s) for s in seqs)
    # Padded as Python lists, then one tensor each: a tensor per row costs more than the row for thousands of rows.
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)

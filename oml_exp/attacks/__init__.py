"""Attacks: what a model thief does to a fingerprinted model before deploying it (sft, merge, quantize, prune,
distill), each a component of the `attack` config group; the attack stage (stage.py) applies one per store entry."""

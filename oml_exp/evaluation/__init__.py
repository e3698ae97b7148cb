"""Utility measurement: lm-eval tasks on local packs or the Hub, paired statistics, and data-free drift."""

"""Fingerprint files: the one schema every stage reads, and the strategies that write it."""

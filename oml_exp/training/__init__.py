"""Fine-tuning fingerprints into a model."""

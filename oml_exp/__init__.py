"""oml-exp: experiments in fingerprinting large language models."""

__version__ = "0.1.0"

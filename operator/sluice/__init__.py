"""Sluice: a Kubernetes operator for NVIDIA Triton Inference Server fleets."""

__version__ = "0.1.0"

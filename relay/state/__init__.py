"""Governance state that must survive restarts: per-domain daily volumes and first sends."""

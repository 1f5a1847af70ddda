"""The delivery side: route clients, the delivery workers, and DSNs for what failed."""

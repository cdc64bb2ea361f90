"""The bridge experiment (bridge_viability.py): logit-lens a large AR model's layers over its own
answer (probe.py) and seed Dream's canvas with the confident tokens (inject.py)."""

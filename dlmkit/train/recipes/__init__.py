"""Recipes that train the shipped tiny checkpoints (one per role)."""

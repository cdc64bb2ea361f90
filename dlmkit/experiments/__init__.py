"""Phases of the experiment scripts: the science the thin top-level scripts call."""

"""Data: the tiny task world, benchmark prompt sets, document streams."""

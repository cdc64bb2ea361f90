"""Metrics: text overlap, answer checking, code execution, language-model NLL."""

"""A small shared training loop: AdamW, warmup + cosine, grad clip, checkpoint/resume."""

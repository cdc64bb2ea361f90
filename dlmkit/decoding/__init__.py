"""Decoding algorithms: Dream diffusion loop, forced decoding, MDLM samplers, speculative sampling."""

"""The paper preset's models as geometries: one home for the real sizes (REFERENCE.md).

Plain dicts, no torch or transformers import, so anything may read them: the loaders'
named sizes (dream.DREAM_SIZES, qwen35.qwen35_9b_config), the benchmarks' --config paper /
qwen2.5-0.5b / qwen3.5-9b, the real-geometry tests and benchmarks/gpu_suite.py. Each dict is
in the form its constructor takes:

  dream-7b       DreamConfig fields (Qwen2.5-7B with bidirectional attention, untied head)
  qwen2.5-0.5b   transformers Qwen2Config kwargs (tied embeddings, 151936 rows)
  qwen2.5-1.5b   transformers Qwen2Config kwargs
  qwen2.5-32b    transformers Qwen2Config kwargs (the bridge probe; untied, 152064 rows)
  gpt2*          transformers GPT2Config kwargs (vocabulary 50257)
  mdlm-owt       MDLMConfig fields (GPT-2's 50257 + the mask)
  qwen3.5-9b     qwen35.text_config kwargs (the text tower; vocabulary 248320)

`with_layers(name, n)` is the same geometry with fewer layers: what a CPU can hold at the real
width and vocabulary.
"""

from __future__ import annotations

DREAM_MASK_TOKEN_ID = 151666  # <|mask|>
DREAM_EOS_TOKEN_ID = 151643  # <|endoftext|>, also pad and bos

DREAM_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072,
                rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                mask_token_id=DREAM_MASK_TOKEN_ID, pad_token_id=DREAM_EOS_TOKEN_ID,
                bos_token_id=DREAM_EOS_TOKEN_ID, eos_token_id=DREAM_EOS_TOKEN_ID, torch_dtype="bfloat16")

# Qwen2.5-0.5B(-Instruct): 494 M parameters, tied embeddings.
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)

QWEN25_15B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)

# Qwen2.5-32B(-Instruct): the bridge probe (untied head, Dream's 152064-row table).
QWEN25_32B = dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                  num_attention_heads=40, num_key_value_heads=8, max_position_embeddings=32768,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
                  tie_word_embeddings=False)

GPT2 = dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)
GPT2_LARGE = dict(vocab_size=50257, n_embd=1280, n_layer=36, n_head=20, n_positions=1024)
GPT2_XL = dict(vocab_size=50257, n_embd=1600, n_layer=48, n_head=25, n_positions=1024)

# kuleshov-group/mdlm-owt's config.json (169.6 M parameters).
MDLM_OWT = dict(vocab_size=50258, model_length=1024, hidden_dim=768, cond_dim=128, n_blocks=12, n_heads=12,
                dropout=0.1, time_conditioning=False)

# Qwen3.5-9B's text tower: hidden 4096, 32 layers (every 4th full attention), vocab 248320;
# the rest are transformers' Qwen3_5TextConfig defaults, which are the 9B's.
QWEN35_9B = dict(vocab_size=248320, hidden_size=4096, num_hidden_layers=32, intermediate_size=12288,
                 num_attention_heads=16, num_key_value_heads=4, head_dim=256, linear_num_key_heads=16,
                 linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
                 tie_word_embeddings=False, rope_theta=10_000_000.0, partial_rotary_factor=0.25)

# name: (architecture, hub id, geometry, the key that counts layers)
REAL_CONFIGS = {
    "dream-7b": ("dream", "Dream-org/Dream-v0-Instruct-7B", DREAM_7B, "num_hidden_layers"),
    "qwen2.5-0.5b": ("qwen2", "Qwen/Qwen2.5-0.5B-Instruct", QWEN25_05B, "num_hidden_layers"),
    "qwen2.5-1.5b": ("qwen2", "Qwen/Qwen2.5-1.5B-Instruct", QWEN25_15B, "num_hidden_layers"),
    "qwen2.5-32b": ("qwen2", "Qwen/Qwen2.5-32B-Instruct", QWEN25_32B, "num_hidden_layers"),
    "gpt2": ("gpt2", "gpt2", GPT2, "n_layer"),
    "gpt2-large": ("gpt2", "gpt2-large", GPT2_LARGE, "n_layer"),
    "gpt2-xl": ("gpt2", "gpt2-xl", GPT2_XL, "n_layer"),
    "mdlm-owt": ("mdlm", "kuleshov-group/mdlm-owt", MDLM_OWT, "n_blocks"),
    "qwen3.5-9b": ("qwen3_5", "Qwen/Qwen3.5-9B", QWEN35_9B, "num_hidden_layers"),
}


def real_config(name: str, **overrides) -> dict:
    """A copy of the named geometry with `overrides` applied."""
    if name not in REAL_CONFIGS:
        raise KeyError(f"unknown real config {name!r}; known: {', '.join(REAL_CONFIGS)}")
    return {**REAL_CONFIGS[name][2], **overrides}


def with_layers(name: str, layers: int | None, **overrides) -> dict:
    """The named geometry with `layers` layers (None: all of them): real width and vocabulary."""
    key = REAL_CONFIGS[name][3]
    return real_config(name, **({} if layers is None else {key: layers}), **overrides)


def architecture(name: str) -> str:
    return REAL_CONFIGS[name][0]


def hub_id(name: str) -> str:
    return REAL_CONFIGS[name][1]

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DLMKIT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def fixtures_dir():
    """../shared/fixtures, or skip when this checkout has none beside it."""
    if not FIXTURES.is_dir():
        pytest.skip(f"no parity fixtures at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def load_script():
    """load_script("train_self_spec.py") -> the script imported as a module (scripts are not a package)."""
    import importlib.util

    def load(filename: str):
        spec = importlib.util.spec_from_file_location(Path(filename).stem, REPO / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def write_mdlm_and_judge():
    """write(root, model_length) -> root holding a tiny random MDLM (`mdlm/`) and GPT-2 judge (`judge/`)
    in the shipped formats, both with the tiny tokenizer (whose last id is <|mask|>, as MDLM wants)."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlmkit.data.tiny_corpus import load_tiny_tokenizer
    from dlmkit.models.mdlm import MDLM, MDLMConfig, save_mdlm
    from dlmkit.presets import TINY_TOKENIZER

    def write(root: Path, model_length: int) -> Path:
        vocab = len(load_tiny_tokenizer())
        torch.manual_seed(0)
        mdlm = MDLM(MDLMConfig(vocab_size=vocab, model_length=model_length, hidden_dim=32, cond_dim=8, n_blocks=1,
                               n_heads=2, dropout=0.0))
        with torch.no_grad():  # the output layer starts at zero: give it some shape
            mdlm.backbone.output_layer.linear.weight.normal_(0, 0.5)
        save_mdlm(mdlm, root / "mdlm")
        GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
            root / "judge")
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(TINY_TOKENIZER / name, root / "mdlm" / name)
            shutil.copy(TINY_TOKENIZER / name, root / "judge" / name)
        return root

    return write

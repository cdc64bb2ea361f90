"""OpenWebText wrapping as MDLM does it, on small fake documents; the tiny stand-in; offline errors."""

import pytest
import torch

from dlmkit.data import owt
from dlmkit.data.owt import _shard_bounds, group_blocks, wrap_token_lists
from dlmkit.errors import UserError

BOS, EOS = 98, 99


def test_one_group_frames_chunks_with_bos_eos_and_drops_the_tail():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    # stream with EOS after each doc: 1 2 3 E 4 5 E 6 7 8 9 E 10 E  (14 tokens; chunks of 5 - 2 = 3)
    blocks = wrap_token_lists(docs, 5, BOS, EOS, group_size=None)
    assert blocks.tolist() == [
        [BOS, 1, 2, 3, EOS],
        [BOS, EOS, 4, 5, EOS],
        [BOS, EOS, 6, 7, EOS],
        [BOS, 8, 9, EOS, EOS],
    ]  # "10 E" (2 tokens) does not fill a chunk and is dropped
    assert blocks.dtype == torch.long


def test_documents_are_grouped_by_map_batches_and_each_group_drops_its_own_tail():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    grouped = wrap_token_lists(docs, 5, BOS, EOS, group_size=2)
    # group 1: 1 2 3 E 4 5 E -> two chunks, "E" dropped; group 2: 6 7 8 9 E 10 E -> two chunks, "E" dropped
    assert grouped.tolist() == [[BOS, 1, 2, 3, EOS], [BOS, EOS, 4, 5, EOS],
                                [BOS, 6, 7, 8, EOS], [BOS, 9, EOS, 10, EOS]]
    assert owt.MAP_BATCH == 1000 and owt.BLOCK_LEN == 1024  # datasets' map default; mdlm-owt's length


def test_real_sized_blocks_are_1022_tokens_between_bos_and_eos():
    docs = [list(range(1, 700)), list(range(1, 900)), list(range(1, 1500))]
    blocks = wrap_token_lists(docs, 1024, BOS, EOS)
    total = 699 + 899 + 1499  # tokens plus one EOS each
    assert blocks.shape == (total // 1022, 1024)
    assert torch.all(blocks[:, 0] == BOS) and torch.all(blocks[:, -1] == EOS)
    body = blocks[:, 1:-1].reshape(-1).tolist()
    stream = [t for d in docs for t in d + [EOS]]
    assert body == stream[:len(body)]  # no overlap, no gap between consecutive blocks


def test_shards_restart_the_groups_like_datasets_num_proc():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"i": list(range(10))})
    expected = [ds.shard(3, k, contiguous=True)["i"] for k in range(3)]
    assert [list(range(a, b)) for a, b in _shard_bounds(10, 3)] == expected
    docs = [[i + 1] * 2 for i in range(10)]  # 3 tokens with EOS: shards of 12, 9, 9
    sharded = wrap_token_lists(docs, 6, BOS, EOS, group_size=1000, num_shards=3)
    by_hand = torch.cat([wrap_token_lists(docs[a:b], 6, BOS, EOS) for a, b in _shard_bounds(10, 3)])
    assert torch.equal(sharded, by_hand) and not torch.equal(sharded, wrap_token_lists(docs, 6, BOS, EOS))


def test_the_datasets_map_path_gives_the_same_blocks():
    datasets = pytest.importorskip("datasets")
    from dlmkit.data.tiny_corpus import load_tiny_tokenizer

    tokenizer = load_tiny_tokenizer()
    texts = [f"The otter number {i} eats {'fish ' * (i % 7)}today." for i in range(2300)]  # 3 map batches
    ds = datasets.Dataset.from_dict({"text": texts})
    via_map = owt.wrap_dataset(ds, tokenizer, block_len=32)[:]
    bos, eos = owt.bos_eos(tokenizer)
    direct = wrap_token_lists(owt.tokenize_documents(tokenizer, texts), 32, bos, eos)
    assert torch.equal(via_map["input_ids"], direct)
    assert torch.all(via_map["attention_mask"] == 1)


def test_tiny_validation_blocks_are_wrapped_tiny_world_text():
    from dlmkit.data.tiny_corpus import load_tiny_tokenizer

    tokenizer = load_tiny_tokenizer()
    blocks = owt.tiny_blocks("validation", tokenizer=tokenizer)
    eos = tokenizer.eos_token_id
    assert blocks.shape[1] == 128 and len(blocks) > 100
    assert torch.all(blocks[:, 0] == eos) and torch.all(blocks[:, -1] == eos)
    assert not (blocks == tokenizer.mask_token_id).any()
    assert torch.equal(owt.heldout_blocks("tiny", 3, tokenizer=tokenizer), blocks[:3])
    with pytest.raises(UserError, match="lower --subset"):
        owt.heldout_blocks("tiny", 10**6, tokenizer=tokenizer)


def test_missing_openwebtext_offline_is_one_line_naming_the_tiny_preset(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openwebtext' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="--preset tiny") as err:
        owt.load_owt_documents("validation")
    assert "\n" not in str(err.value) and "train[-100000:]" in str(err.value)
    with pytest.raises(UserError, match="--preset tiny"):
        owt.heldout_blocks("paper", 4)
    with pytest.raises(UserError, match="train or validation"):
        owt.load_owt_documents("test")


def test_bad_wrapping_arguments_name_the_fix():
    with pytest.raises(UserError, match=">= 3"):
        group_blocks([[1]], 2, BOS, EOS)
    with pytest.raises(UserError, match="group_size"):
        wrap_token_lists([[1]], 8, BOS, EOS, group_size=0)

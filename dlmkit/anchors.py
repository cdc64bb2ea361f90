"""Anchors: the answer tokens a diffusion LM has already committed after part of its steps.

One diffusion run records, for every generation position, the step after which it stopped
being the mask (`DiffusionOutput.commit_step`). The anchors after a fraction f of `steps`
steps are the positions with commit_step < int(steps * f): positions are generation-relative
(0 = the first answer token; the prompt is never part of an anchor set), tokens are the
committed ids, which never change afterwards (permanence).

This module turns commit steps into `Anchors`, measures them (coverage, contiguous-prefix
fraction), builds the ablation controls (random tokens at the real positions, the real
tokens at random positions) and encodes them as payloads whose size is counted to the byte.

Payload formats (sizes are `len()` of the returned bytes):

  gzip template  (the paper's "119 B" measure; lossy) the answer's first `length` positions
                 written as text: every maximal run of consecutive anchors is decoded
                 together (one `decode(run_ids)` call, so multi-byte characters split over
                 tokens come out whole) and every non-anchor position is one "\\x00"
                 character; the UTF-8 string is gzip-compressed at level 9 with mtime 0
                 (deterministic bytes, 18 bytes of gzip header and trailer included).
                 Run boundaries, gap widths and anchor text survive; the token boundaries
                 inside a run do not (re-tokenising the run usually, not always, gives the
                 same ids: `template_to_anchors`).
  varint         (lossless) LEB128 varints: length, count, then per anchor the gap since
                 the previous anchor (position - previous - 1, previous = -1 at the start;
                 0 inside a run) and the token id. Contiguous runs of ids < 128 cost 2 B/anchor.
  fixed          (lossless) little-endian uint32 length, uint32 count, then per anchor
                 uint32 position + uint32 token id (4+4 bytes): exactly 8 + 8 * count bytes.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch

from dlmkit.errors import UserError

NULL = "\x00"


# --------------------------------------------------------------------------- the anchor set


@dataclass(frozen=True)
class Anchors:
    """Committed answer tokens: sorted generation-relative `positions`, their `tokens`, and
    `length`, the answer length they refer to (coverage, controls and templates use it)."""

    positions: tuple[int, ...]
    tokens: tuple[int, ...]
    length: int

    def __post_init__(self):
        object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))
        object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
        if len(self.positions) != len(self.tokens):
            raise UserError(f"anchors have {len(self.positions)} positions but {len(self.tokens)} tokens; "
                            "pass one token per position")
        if self.length < 0:
            raise UserError(f"anchor length must be >= 0, got {self.length}")
        if any(b <= a for a, b in zip(self.positions, self.positions[1:])):
            raise UserError("anchor positions must be strictly increasing; build them with Anchors.from_mapping")
        if self.positions and not (0 <= self.positions[0] and self.positions[-1] < self.length):
            raise UserError(f"anchor positions must lie in [0, {self.length}); got {self.positions[0]}.."
                            f"{self.positions[-1]} (positions are generation-relative, the prompt excluded)")

    @classmethod
    def from_mapping(cls, mapping: Mapping, length: int, *, drop_outside: bool = False) -> "Anchors":
        """From {position: token_id} (keys may be strings, as in published_anchors.json).
        drop_outside: silently drop positions >= length instead of raising."""
        items = sorted((int(p), int(t)) for p, t in mapping.items())
        if drop_outside:
            items = [(p, t) for p, t in items if p < length]
        return cls(tuple(p for p, _ in items), tuple(t for _, t in items), int(length))

    def as_dict(self) -> dict[int, int]:
        return dict(zip(self.positions, self.tokens))

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def coverage(self) -> float:
        """Share of the answer's positions that are anchors (0 for an empty answer)."""
        return len(self.positions) / self.length if self.length else 0.0

    def truncated(self, length: int) -> "Anchors":
        """The anchors below `length`, referring to an answer of that length."""
        keep = [i for i, p in enumerate(self.positions) if p < length]
        return Anchors(tuple(self.positions[i] for i in keep), tuple(self.tokens[i] for i in keep), int(length))


# --------------------------------------------------------------------------- extraction


def steps_done_at(fraction: float, steps: int) -> int:
    """Denoising steps finished at `fraction` of `steps`: int(steps * fraction), the paper's
    convention (10% of 128 steps = 12 steps). Plain float truncation, as the paper's code
    did, so e.g. int(100 * 0.29) = 28."""
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps!r}")
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise UserError(f"step fraction must be a number in (0, 1], got {fraction!r}") from None
    if not 0 < fraction <= 1:
        raise UserError(f"step fraction must be in (0, 1] (e.g. 0.1 for 10% of the steps), got {fraction!r}")
    return int(steps * fraction)


def anchors_at_fraction(commit_step, tokens, fraction: float, steps: int, *, length: int | None = None) -> Anchors:
    """Anchors of one answer after `fraction` of `steps` denoising steps.

    commit_step: (max_new_tokens,) per generation position, the 0-based step after which it
        was committed (-1 = filled before step 0, e.g. by a hook; `steps` = never).
    tokens: (max_new_tokens,) the answer's final tokens (a committed token never changes).
    length: keep only positions < length (default: the whole generation region).
    """
    return anchors_after(commit_step, tokens, steps_done_at(fraction, steps), length=length)


def anchors_after(commit_step, tokens, steps_done: int, *, length: int | None = None) -> Anchors:
    """Anchors of one answer after `steps_done` denoising steps (any count, e.g. an adaptive
    stop's); arguments as anchors_at_fraction."""
    commit_step = torch.as_tensor(commit_step).reshape(-1)
    tokens = torch.as_tensor(tokens).reshape(-1)
    if commit_step.shape != tokens.shape:
        raise UserError(f"commit_step has {commit_step.numel()} positions but tokens {tokens.numel()}; "
                        "pass one row of DiffusionOutput.commit_step and of DiffusionOutput.generated")
    width = commit_step.numel()
    length = width if length is None else int(length)
    if not 0 <= length <= width:
        raise UserError(f"length must be in [0, {width}] (the generation width), got {length}")
    committed = (commit_step[:length] < steps_done).nonzero().flatten()
    return Anchors(tuple(committed.tolist()), tuple(tokens[committed].tolist()), length)


def anchors_from_diffusion(output, fraction: float, steps: int, *, lengths: Sequence[int] | None = None) -> list[Anchors]:
    """One `Anchors` per row of a `DiffusionOutput` (see anchors_at_fraction)."""
    rows = output.commit_step.shape[0]
    if lengths is not None and len(lengths) != rows:
        raise UserError(f"got {len(lengths)} lengths for {rows} rows; pass one length per prompt")
    return [anchors_at_fraction(output.commit_step[b], output.generated[b], fraction, steps,
                                length=None if lengths is None else lengths[b]) for b in range(rows)]


def coverage(anchors: Anchors, length: int | None = None) -> float:
    """Anchors / positions, over `length` positions (default the anchors' own length)."""
    length = anchors.length if length is None else length
    return sum(1 for p in anchors.positions if p < length) / length if length else 0.0


def contiguous_prefix_length(anchors: Anchors) -> int:
    """How many anchors form an unbroken run starting at position 0."""
    run = 0
    for p in anchors.positions:
        if p != run:
            break
        run += 1
    return run


def contiguous_prefix_fraction(anchors: Anchors) -> float:
    """Share of the anchors that form a contiguous prefix from position 0 (NaN when there are
    no anchors). Averaged over the published 10% patterns this is 0.911, the "~91%" that
    entropy-ordered decoding commits left to right."""
    return contiguous_prefix_length(anchors) / len(anchors) if len(anchors) else float("nan")


def runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions as (start, stop) half-open ranges."""
    out: list[list[int]] = []
    for p in positions:
        if out and p == out[-1][1]:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return [(a, b) for a, b in out]


# --------------------------------------------------------------------------- ablation controls


def _torch_generator(generator) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    raise UserError("pass generator=torch.Generator().manual_seed(SEED) or an integer seed")


def random_token_control(anchors: Anchors, vocab_size: int, *, generator, special_ids: Iterable[int] = ()) -> Anchors:
    """The same positions with token ids drawn uniformly (with replacement) from the vocabulary
    minus `special_ids` (mask, end-of-text, chat markers): tests whether the tokens matter."""
    special = {int(s) for s in special_ids}
    allowed = torch.tensor([i for i in range(vocab_size) if i not in special], dtype=torch.long)
    if allowed.numel() == 0:
        raise UserError(f"no ordinary token ids left in a vocabulary of {vocab_size} after removing special ids")
    pick = torch.randint(allowed.numel(), (len(anchors),), generator=_torch_generator(generator))
    return Anchors(anchors.positions, tuple(allowed[pick].tolist()), anchors.length)


def random_position_control(anchors: Anchors, *, generator, length: int | None = None) -> Anchors:
    """The same tokens, in the same order, at positions drawn uniformly without replacement from
    range(length) (default the anchors' answer length): tests whether the positions matter.
    (The published code drew from range(256) whatever the answer's length, and shuffled order.)"""
    length = anchors.length if length is None else int(length)
    if len(anchors) > length:
        raise UserError(f"cannot place {len(anchors)} anchors in {length} positions; pass length >= {len(anchors)}")
    drawn = torch.randperm(length, generator=_torch_generator(generator))[:len(anchors)]
    return Anchors(tuple(sorted(drawn.tolist())), anchors.tokens, length)


# --------------------------------------------------------------------------- payloads


def template_text(anchors: Anchors, decode: Callable[[list[int]], str]) -> str:
    """The anchor template: decoded anchor runs, one NULL character per non-anchor position,
    over positions [0, anchors.length). `decode` is e.g. `tokenizer.decode`."""
    pieces, cursor = [], 0
    token_at = anchors.as_dict()
    for start, stop in runs(anchors.positions):
        pieces.append(NULL * (start - cursor))
        text = decode([token_at[p] for p in range(start, stop)])
        if NULL in text:
            raise UserError("an anchor decodes to a NULL character, which the template reserves for gaps; "
                            "use the varint payload for this vocabulary")
        pieces.append(text)
        cursor = stop
    pieces.append(NULL * (anchors.length - cursor))
    return "".join(pieces)


def encode_gzip_template(anchors: Anchors, decode: Callable[[list[int]], str]) -> bytes:
    """gzip (level 9, mtime 0) of the UTF-8 template (see template_text)."""
    return gzip.compress(template_text(anchors, decode).encode("utf-8"), compresslevel=9, mtime=0)


def decode_gzip_template(payload: bytes) -> str:
    """The template text back from its gzip payload."""
    return gzip.decompress(payload).decode("utf-8")


def template_to_anchors(text: str, encode: Callable[[str], list[int]]) -> Anchors:
    """Best-effort anchors from a template: each NULL is a gap position, each text run is
    re-tokenised with `encode` (e.g. `lambda s: tokenizer.encode(s, add_special_tokens=False)`).
    Exact only when the tokenizer maps each run's text back to the same ids."""
    positions, tokens, cursor, i = [], [], 0, 0
    while i < len(text):
        if text[i] == NULL:
            cursor += 1
            i += 1
            continue
        j = i
        while j < len(text) and text[j] != NULL:
            j += 1
        ids = list(encode(text[i:j]))
        positions += range(cursor, cursor + len(ids))
        tokens += ids
        cursor += len(ids)
        i = j
    return Anchors(tuple(positions), tuple(tokens), cursor)


def gzip_text_size(text: str) -> int:
    """Bytes of gzip(text) with the template's settings: the "full text" baseline."""
    return len(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def _varint(n: int) -> bytes:
    if n < 0:
        raise UserError(f"varints encode non-negative integers, got {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(payload: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(payload):
            raise UserError("truncated varint anchor payload; pass the complete bytes pack_anchors returned")
        byte = payload[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


PACK_FORMATS = ("varint", "fixed")
_U32 = struct.Struct("<II")


def pack_anchors(anchors: Anchors, fmt: str = "varint") -> bytes:
    """Lossless binary payload of the anchors (format in the module docstring)."""
    if fmt == "varint":
        out, previous = [_varint(anchors.length), _varint(len(anchors))], -1
        for p, t in zip(anchors.positions, anchors.tokens):
            out += [_varint(p - previous - 1), _varint(t)]
            previous = p
        return b"".join(out)
    if fmt == "fixed":
        if anchors.length >= 2**32 or any(t < 0 or t >= 2**32 for t in anchors.tokens):
            raise UserError("fixed payload fields are uint32; use fmt='varint'")
        return _U32.pack(anchors.length, len(anchors)) + b"".join(
            _U32.pack(p, t) for p, t in zip(anchors.positions, anchors.tokens))
    raise UserError(f"unknown payload format {fmt!r}; pass one of {', '.join(PACK_FORMATS)}")


def unpack_anchors(payload: bytes, fmt: str = "varint") -> Anchors:
    """Inverse of pack_anchors."""
    if fmt == "varint":
        length, i = _read_varint(payload, 0)
        count, i = _read_varint(payload, i)
        positions, tokens, previous = [], [], -1
        for _ in range(count):
            gap, i = _read_varint(payload, i)
            token, i = _read_varint(payload, i)
            previous += gap + 1
            positions.append(previous)
            tokens.append(token)
        if i != len(payload):
            raise UserError(f"{len(payload) - i} stray bytes after the varint anchor payload")
        return Anchors(tuple(positions), tuple(tokens), length)
    if fmt == "fixed":
        if len(payload) < 8 or (len(payload) - 8) % 8:
            raise UserError(f"a fixed anchor payload is 8 + 8 * count bytes, got {len(payload)}")
        length, count = _U32.unpack_from(payload, 0)
        if len(payload) != 8 + 8 * count:
            raise UserError(f"fixed payload says {count} anchors but holds {(len(payload) - 8) // 8}")
        pairs = [_U32.unpack_from(payload, 8 + 8 * k) for k in range(count)]
        return Anchors(tuple(p for p, _ in pairs), tuple(t for _, t in pairs), length)
    raise UserError(f"unknown payload format {fmt!r}; pass one of {', '.join(PACK_FORMATS)}")


def payload_sizes(anchors: Anchors, decode: Callable[[list[int]], str], full_text: str | None = None) -> dict:
    """Bytes of every payload for one answer; with `full_text` also the raw and gzip baselines."""
    sizes = {
        "gzip_template_bytes": len(encode_gzip_template(anchors, decode)),
        "varint_bytes": len(pack_anchors(anchors, "varint")),
        "fixed_bytes": len(pack_anchors(anchors, "fixed")),
    }
    if full_text is not None:
        sizes["raw_text_bytes"] = len(full_text.encode("utf-8"))
        sizes["gzip_text_bytes"] = gzip_text_size(full_text)
    return sizes


__all__ = [
    "Anchors", "PACK_FORMATS", "anchors_after", "anchors_at_fraction", "anchors_from_diffusion", "contiguous_prefix_fraction",
    "contiguous_prefix_length", "coverage", "decode_gzip_template", "encode_gzip_template", "gzip_text_size",
    "pack_anchors", "payload_sizes", "random_position_control", "random_token_control", "runs", "steps_done_at",
    "template_text", "template_to_anchors", "unpack_anchors",
]

"""CLSD's two training stages, as loss functions for dlmkit.train.loop.train.

Stage A (rectified flow): for a chunk's scaled embeddings x_1, noise x_0 ~ N(0, I) and
t ~ U(0, 1), regress dit(x_t, t, C) onto x_1 - x_0 (dlmkit.decoding.flow).

Stage C (through the verifier): noise -> K Euler steps of the DiT -> draft embeddings;
the frozen verifier reads [prefix tokens, draft] and its next-token logits over the draft
positions are scored with cross-entropy against the chunk's true tokens, plus
beta * MSE(draft, true scaled embeddings) with beta annealed linearly from beta0 to 0.
The verifier's weights are frozen (requires_grad False, outside the optimizer); gradients
flow through its activations into the DiT only.

Batches are pure functions of the step (rows, noise and t from a generator seeded by the
step), so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlmkit.decoding.clsd import draft
from dlmkit.decoding.flow import rectified_flow_loss
from dlmkit.models.clsd import nearest_tokens
from dlmkit.seeds import flow_batch_seed


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(flow_batch_seed(seed, step, salt))


def flow_batch(shards, step: int, batch_size: int, seed: int, device: str, scale: float) -> dict:
    """Rows, noise and t for one step (stage A and C share it)."""
    gen = step_generator(seed, step)
    rows = torch.randint(0, len(shards), (batch_size,), generator=gen)
    batch = shards.rows(rows.sort().values, device=device)
    target = batch["chunk_embeds"] / scale
    batch["target"] = target
    batch["noise"] = torch.randn(target.shape, generator=gen).to(device=device, dtype=target.dtype)
    batch["t"] = torch.rand(batch_size, generator=gen).to(device)
    return batch


def stage_a_loss(dit, batch: dict):
    loss = rectified_flow_loss(lambda x, t: dit(x, t, batch["cond"]), batch["target"], batch["noise"], batch["t"])
    return loss, {}


def verifier_logits_on(verifier, prefix_ids: torch.Tensor, block_embeds: torch.Tensor) -> torch.Tensor:
    """Next-token logits of the verifier at the block positions but the last, reading
    [prefix tokens, block embeddings]; position i predicts block token i + 1."""
    prefix_embeds = verifier.get_input_embeddings()(prefix_ids).to(block_embeds.dtype)
    hidden = verifier.model(inputs_embeds=torch.cat([prefix_embeds, block_embeds], dim=1)).last_hidden_state
    return verifier.lm_head(hidden[:, prefix_ids.shape[1]:-1])


def stage_c_terms(dit, verifier, batch: dict, euler_steps: int) -> dict:
    """CE of the verifier reading [prefix, drafts] against block tokens 1..G-1, and the MSE.

    Block token 0 is not in the CE, deliberately: the verifier's prediction of it comes from
    the prefix alone (causal attention), so it does not depend on the drafts and its CE would
    add a constant with no gradient to the DiT. The draft of token 0 is still trained, as the
    context every later position reads and through the MSE term; nothing pulls it towards the
    verifier's own prediction once beta has annealed to 0, which is why inference's guillotine
    (which does score draft token 0 against the verifier's prefix prediction) can reject at 0.
    """
    drafts = draft(dit, batch["cond"], batch["noise"], euler_steps)
    logits = verifier_logits_on(verifier, batch["prefix_ids"], dit.to_embeddings(drafts))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["chunk_ids"][:, 1:].reshape(-1))
    mse = (drafts.float() - batch["target"].float()).pow(2).mean()
    return {"ce": ce, "mse": mse, "drafts": drafts}


class StageC(nn.Module):
    """The DiT (trained) beside the frozen verifier, so the shared loop sees one module whose
    only trainable parameters are the DiT's."""

    def __init__(self, dit, verifier):
        super().__init__()
        self.dit = dit
        self.verifier = verifier
        verifier.requires_grad_(False)


def beta_at(step: int, total_steps: int, beta0: float) -> float:
    """beta annealed linearly from beta0 at the first step to 0 at the last."""
    return beta0 * max(0.0, 1.0 - step / max(1, total_steps - 1))


def stage_c_loss(model: StageC, batch: dict, euler_steps: int):
    terms = stage_c_terms(model.dit, model.verifier, batch, euler_steps)
    loss = terms["ce"] + batch["beta"] * terms["mse"]
    return loss, {"ce": terms["ce"], "mse": terms["mse"], "beta": batch["beta"]}


@torch.no_grad()
def evaluate_drafts(dit, verifier, batch: dict, euler_steps: int) -> dict:
    """On a fixed held-out batch: flow MSE at random t, and drafts from fixed noise: CE of
    the verifier reading them, MSE to the true embeddings, and the share of drafted tokens
    (nearest embedding) equal to the true ones."""
    flow = rectified_flow_loss(lambda x, t: dit(x, t, batch["cond"]), batch["target"], batch["noise"], batch["t"])
    terms = stage_c_terms(dit, verifier, batch, euler_steps)
    tokens = nearest_tokens(dit.to_embeddings(terms["drafts"]), verifier.get_input_embeddings().weight)
    accuracy = (tokens == batch["chunk_ids"]).float().mean()
    return {"flow_mse": float(flow), "draft_ce": float(terms["ce"]), "draft_mse": float(terms["mse"]),
            "draft_token_acc": float(accuracy)}


@torch.no_grad()
def reference_ce(verifier, batch: dict) -> float:
    """The floor of stage C: the verifier's CE on the same positions reading the true tokens."""
    embeds = verifier.get_input_embeddings()(batch["chunk_ids"])
    logits = verifier_logits_on(verifier, batch["prefix_ids"], embeds)
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["chunk_ids"][:, 1:].reshape(-1)))

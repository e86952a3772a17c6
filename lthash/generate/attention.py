"""Cross-attention capture: store the attention probabilities of every ``attn2`` layer.

AttnDreamBooth's regulariser reads, for every cross-attention layer of the UNet, the attention
map of a few prompt tokens ([V] and its category word). :class:`CrossAttentionCapture` is an
attention processor that computes attention explicitly,

    P = softmax(Q K^T / sqrt(d)),   out = P V,

and keeps ``P[..., tokens]`` reshaped to ``(batch, heads, pixels, len(tokens))`` in an
:class:`AttentionStore`. :func:`capture_cross_attention` installs it on the cross-attention
layers only (self-attention keeps its processor) through ``unet.set_attn_processor`` and
restores the previous processors on exit. The maps keep their autograd graph, so a loss on
them trains the layers that produced them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

CROSS_ATTENTION_SUFFIX = "attn2.processor"


def cross_attention_layer_names(unet: torch.nn.Module) -> list[str]:
    """Processor names of the cross-attention (``attn2``) layers, in the UNet's order."""
    return [name for name in unet.attn_processors if name.endswith(CROSS_ATTENTION_SUFFIX)]


@dataclass
class AttentionStore:
    """Captured maps by layer name: each ``(batch, heads, pixels, len(tokens))``.

    ``tokens`` are the prompt positions kept, either one list for the whole batch or a
    ``(batch, k)`` integer tensor of per-sample positions. ``enabled`` pauses capture (for
    example while sampling a grid) without removing the processors.
    """

    tokens: Sequence[int] | torch.Tensor
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    enabled: bool = True

    def reset(self) -> None:
        """Drop the maps of the previous forward pass."""
        self.maps.clear()

    def record(self, name: str, probs: torch.Tensor, heads: int) -> None:
        """Keep the chosen token columns of ``probs`` ((batch*heads, pixels, text_len)).

        Only a layer's first map after :meth:`reset` is kept: under gradient checkpointing the
        backward pass recomputes each layer's forward, and a recomputed map kept here would
        hold that layer's recomputed attention graph alive until the next reset (on SD 1.5 at
        64 x 64 latents, the graph of all 16 cross-attention layers). The columns are still
        selected, so the recomputation saves the same tensors as the forward pass.
        """
        if not self.enabled:
            return
        batch = probs.shape[0] // heads
        probs = probs.reshape(batch, heads, probs.shape[1], probs.shape[2])
        if isinstance(self.tokens, torch.Tensor):
            index = self.tokens.to(probs.device).long()
            if index.shape[0] != batch:
                index = index.repeat(batch // index.shape[0], 1)
            index = index[:, None, None, :].expand(batch, heads, probs.shape[2], index.shape[-1])
            selected = probs.gather(-1, index)
        else:
            selected = probs[..., list(self.tokens)]
        self.maps.setdefault(name, selected)


class CrossAttentionCapture:
    """Attention processor computing attention explicitly and recording its probabilities.

    Same arithmetic as diffusers' ``AttnProcessor`` (spatial/group norm, residual, rescale),
    so outputs match the default processor up to floating-point rounding.
    """

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.store.record(self.name, probs, attn.heads)
        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def capture_cross_attention(
    unet: torch.nn.Module, tokens: Sequence[int] | torch.Tensor
) -> Iterator[AttentionStore]:
    """Install :class:`CrossAttentionCapture` on every ``attn2`` layer of ``unet``.

    Yields the :class:`AttentionStore` the maps land in (reset it before each forward pass).
    The previous processors are put back on exit, even after an exception.
    """
    previous = dict(unet.attn_processors)
    if not any(name.endswith(CROSS_ATTENTION_SUFFIX) for name in previous):
        raise ValueError("the UNet has no cross-attention (attn2) layer to capture")
    store = AttentionStore(tokens=tokens)
    processors = {
        name: CrossAttentionCapture(store, name) if name.endswith(CROSS_ATTENTION_SUFFIX) else proc
        for name, proc in previous.items()
    }
    unet.set_attn_processor(processors)
    try:
        yield store
    finally:
        unet.set_attn_processor(previous)

"""LLaMA-VID style compression of a LLaVA checkpoint: 2 LM tokens per frame, +2 per pair.

Per frame (its patch tokens X, projected by the checkpoint's own projector into the LM space):
- context token: attention over X with the instruction's own LM input embeddings as queries,
  cosine similarity / temperature (the norms of word and visual embeddings differ too much for
  `/sqrt(D)`), averaged over the queries. Parameter-free; a learned residual `q + g W q` on the
  queries with g = 0 at the start.
- content token(s): X average-pooled to a grid (1x1 -> 1 token, 2x2 -> 4 tokens).
Per pair (before B, after A): per-patch change `c = |A - B|`, normalised by median / MAD,
`w = softmax(c / tau)`; delta tokens `w B` ("what was there") and `w A` ("what is there now").
Every output token also passes a gated residual `t + g W t` with g = 0, so an untrained
compressor is exactly the parameter-free one, and training starts from the zero-shot model.

The LLaVA checkpoint's modules are used as they are (`model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`, `lm_head`, the same parameter names as `LlavaForConditionalGeneration`,
so a compressed checkpoint's LM also loads as plain LLaVA); `compressor` holds every new part.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GenerationMixin, LlavaConfig, LlavaForConditionalGeneration, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llava.modeling_llava import LlavaModel

# LoRA on the language model only: a composite model's vision tower has its own q_proj/k_proj.
LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@strict
class CompressedCaptionerConfig(LlavaConfig):
    """A LLaVA config plus the compressor's settings."""

    model_type = "compressed_captioner"

    content_grid: int = 1  # content tokens per frame: content_grid ** 2 (1 -> 2 tokens/frame, 2 -> 5)
    delta_tokens: int = 2  # per pair: 0, 1 (what is there now) or 2 (what was there, what is there now)
    context_temperature: float = 0.07  # cosine attention temperature of the context token
    delta_temperature: float = 2.0  # softmax temperature on the median/MAD-normalised change

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.content_grid**2


class GatedResidual(nn.Module):
    """`x + gate * W x`; the gate starts at 0, so the module starts as the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate * self.proj(x)


class FrameCompressor(nn.Module):
    """Projected patch tokens -> context + content tokens per frame, delta tokens per pair."""

    def __init__(self, config: CompressedCaptionerConfig):
        super().__init__()
        dim = config.text_config.hidden_size
        self.grid = config.content_grid
        self.n_delta = config.delta_tokens
        self.context_temperature = config.context_temperature
        self.delta_temperature = config.delta_temperature
        self.query = GatedResidual(dim)  # instruction queries
        self.context = GatedResidual(dim)
        self.content = GatedResidual(dim)
        self.delta = GatedResidual(dim)

    def frame_tokens(self, patches: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """patches (F, P, D) projected patch tokens of F frames; queries (Q, D) instruction
        embeddings (Q may be 0: the context token is then the plain mean).
        Returns (F, 1 + grid**2, D): [context, content...] per frame."""
        x = patches.float()
        if queries.shape[0]:
            q = self.query(queries.to(self.query.proj.weight.dtype)).float()  # (Q, D)
            sim = torch.einsum("qd,fpd->fqp", F.normalize(q, dim=-1), F.normalize(x, dim=-1))  # (F, Q, P)
            attn = torch.softmax(sim / self.context_temperature, dim=-1)
            context = torch.einsum("fqp,fpd->fd", attn, x) / queries.shape[0]  # mean over queries (F, D)
        else:
            context = x.mean(dim=1)
        side = math.isqrt(x.shape[1])
        grid = x[:, x.shape[1] - side * side :]  # a leading CLS token ("full" strategy) is not a patch
        grid = grid.reshape(x.shape[0], side, side, -1).permute(0, 3, 1, 2)  # (F, D, side, side)
        content = F.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)  # (F, grid**2, D)
        dtype = self.context.proj.weight.dtype
        context = self.context(context.to(dtype))[:, None]  # (F, 1, D)
        content = self.content(content.to(dtype))
        return torch.cat([context, content], dim=1).to(patches.dtype)

    def change_weights(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """before/after (P, D) -> (P,) weights summing to 1, peaked where the patches changed."""
        change = (after.float() - before.float()).norm(dim=-1)  # (P,)
        median = change.median()
        deviation = change - median
        # Robust z-score: noise and lighting ~ 1, a real change >> 1. The MAD is 0 when most patches
        # are exactly unchanged (static background, letterbox padding): the scale is floored at a
        # tenth of the largest deviation, so z <= 10 and the weights spread over the changed region.
        scale = torch.maximum(1.4826 * deviation.abs().median(), 0.1 * deviation.max()).clamp_min(1e-6)
        return torch.softmax(deviation / scale / self.delta_temperature, dim=0)

    def delta_tokens(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """before/after (P, D) -> (n_delta, D): [what was there, what is there now][-n_delta:]."""
        if not self.n_delta:
            return before.new_zeros((0, before.shape[-1]))
        w = self.change_weights(before, after)
        tokens = torch.stack([w @ before.float(), w @ after.float()])[2 - self.n_delta :]  # (n_delta, D)
        return self.delta(tokens.to(self.delta.proj.weight.dtype)).to(before.dtype)


class CompressedCaptioner(PreTrainedModel, GenerationMixin):
    config_class = CompressedCaptionerConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: CompressedCaptionerConfig):
        super().__init__(config)
        self.model = LlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.compressor = FrameCompressor(config)
        self.post_init()
        self.loss_type = "ForCausalLM"  # next-token loss (the class name names no loss)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GatedResidual):
            nn.init.normal_(module.proj.weight, std=module.proj.in_features**-0.5)
            nn.init.zeros_(module.gate)  # start exactly at the parameter-free compressor
        else:
            super()._init_weights(module)

    @classmethod
    def from_llava(
        cls,
        llava: LlavaForConditionalGeneration,
        *,
        content_grid: int = 1,
        delta_tokens: int = 2,
        context_temperature: float = 0.07,
        delta_temperature: float = 2.0,
    ) -> CompressedCaptioner:
        """Wrap a loaded LLaVA model (its modules are shared, not copied) with a new compressor."""
        if delta_tokens not in (0, 1, 2) or content_grid < 1:
            raise ValueError(
                f"delta_tokens must be 0, 1 or 2 and content_grid >= 1 (got {delta_tokens}, {content_grid})"
            )
        skip = {"model_type", "transformers_version", "architectures", "_name_or_path"}
        config = CompressedCaptionerConfig(
            **{k: v for k, v in llava.config.to_dict().items() if k not in skip},
            content_grid=content_grid,
            delta_tokens=delta_tokens,
            context_temperature=context_temperature,
            delta_temperature=delta_temperature,
        )
        with torch.device("meta"):  # allocate nothing: the LLaVA modules are moved in below
            model = cls(config)
        model.model = llava.model
        model.lm_head = llava.lm_head
        embed = llava.get_input_embeddings().weight
        model.compressor = FrameCompressor(config)
        model.compressor.apply(model._init_weights)
        model.compressor.to(device=embed.device, dtype=embed.dtype)
        model.generation_config = llava.generation_config
        model.train(llava.training)
        return model

    def to_llava(self) -> LlavaForConditionalGeneration:
        """The plain LLaVA model (full visual tokens, `pair` mode) sharing these modules."""
        with torch.device("meta"):
            llava = LlavaForConditionalGeneration(self.config)
        llava.model, llava.lm_head = self.model, self.lm_head
        llava.generation_config = self.generation_config
        return llava.train(self.training)

    # the LLaVA parts, by name
    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, S, S) -> (N, P, Dv) the vision tower's selected patch features
        (before the projector: what the frame cache keeps)."""
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        layers = self.config.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        tower = self.vision_tower  # transformers 5: CLIP/SigLIP blocks at tower.encoder.layers (4.x: .vision_model)
        encoder = getattr(tower, "encoder", None) or getattr(getattr(tower, "vision_model", None), "encoder", None)
        blocks = getattr(encoder, "layers", None)
        index = [i % (len(blocks) + 1) for i in layers] if isinstance(blocks, nn.ModuleList) else []
        if index and min(index) > 0:
            # hidden state i (0 = embeddings) is block i's output and needs only the first i blocks: LLaVA's
            # default layer -2 leaves the last block unused (1/24 of CLIP-L/336, half a 2-block test tower).
            # Own hooks rather than output_hidden_states: transformers installs its capture hooks once,
            # on the blocks present then, and the tower is whole again after this call.
            found: dict[int, torch.Tensor] = {}
            hooks = [
                blocks[i - 1].register_forward_hook(
                    lambda _m, _a, out, i=i: found.__setitem__(i, out[0] if isinstance(out, tuple) else out)
                )
                for i in set(index)
            ]
            encoder.layers = blocks[: max(index)]
            try:
                tower(pixel_values)
            finally:
                encoder.layers = blocks
                for hook in hooks:
                    hook.remove()
            feats = [found[i] for i in index]
        else:
            out = tower(pixel_values, output_hidden_states=True)
            feats = [out.hidden_states[i] for i in layers]
        if self.config.vision_feature_select_strategy == "default":
            feats = [f[:, 1:] for f in feats]  # drop CLS
        return torch.cat(feats, dim=-1)

    def visual_tokens(
        self,
        inputs_embeds: torch.Tensor,
        query_mask: torch.Tensor | None,
        frame_index: torch.Tensor,
        frame_features: torch.Tensor,
    ) -> torch.Tensor:
        """The LM tokens of every sample's frames, in sample order: (sum_b T_b, D) with
        T_b = frames_b * tokens_per_frame + delta_tokens (frames_b >= 2).
        inputs_embeds (B, L, D); query_mask (B, L); frame_index (B, F) rows of frame_features in
        time order, -1 = none; frame_features (N, P, Dv)."""
        patches = self.model.multi_modal_projector(frame_features.to(self.multi_modal_projector.linear_1.weight.dtype))
        out = []
        for b in range(inputs_embeds.shape[0]):
            rows = frame_index[b][frame_index[b] >= 0]  # (F_b,)
            x = patches[rows]  # (F_b, P, D)
            queries = inputs_embeds[b][query_mask[b].bool()] if query_mask is not None else inputs_embeds[b, :0]
            out.append(self.compressor.frame_tokens(x, queries).flatten(0, 1))  # (F_b * tpf, D)
            if rows.numel() >= 2:
                out.append(self.compressor.delta_tokens(x[-2], x[-1]))  # (n_delta, D)
        return torch.cat(out)

    _FRAME_INPUTS = ("pixel_values", "frame_features", "frame_index", "query_mask")

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """The frames go in with the prompt only (like LLaVA's pixel_values): decoding steps with a
        cache get none, so a generated placeholder token is an ordinary token there."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in self._FRAME_INPUTS:
                inputs.pop(key, None)
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, L) with tokens_per_frame placeholders per frame
        pixel_values: torch.Tensor | None = None,  # (N, 3, S, S) every frame of the batch, once
        frame_features: torch.Tensor | None = None,  # (N, P, Dv) or: cached vision features of those frames
        frame_index: torch.LongTensor | None = None,  # (B, F) rows of the frames of each sample, -1 = none
        query_mask: torch.Tensor | None = None,  # (B, L) instruction tokens (context-token queries)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = token, 0 = padding
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,  # (B, L, D) instead of input_ids
        labels: torch.LongTensor | None = None,  # (B, L) -100 = no loss
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
            slots = input_ids == self.config.image_token_id  # (B, L)
            has_frames = frame_features is not None or pixel_values is not None
            decoding = cache is not None and cache.get_seq_length() > 0
            if slots.any() and (has_frames or not decoding):  # a generated placeholder is a plain token
                if not has_frames:
                    raise ValueError("frame placeholders in input_ids but no pixel_values or frame_features")
                if frame_features is None:
                    frame_features = self.vision_features(pixel_values)
                visual = self.visual_tokens(inputs_embeds, query_mask, frame_index, frame_features)  # (T, D)
                if visual.shape[0] != int(slots.sum()):
                    raise ValueError(
                        f"{int(slots.sum())} frame placeholders in input_ids but {visual.shape[0]} frame tokens "
                        f"({self.config.tokens_per_frame} per frame + {self.config.delta_tokens} per pair)"
                    )
                inputs_embeds = inputs_embeds.masked_scatter(slots[..., None], visual.to(inputs_embeds.dtype))
        outputs = self.model.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, L, D)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])  # (B, L', V)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)

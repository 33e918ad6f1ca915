"""A tiny random-weight LLaVA checkpoint (CLIP vision + Llama text), built offline.

The fixture for every test and the `--arch tiny` benchmark: the same files a real checkpoint has
(config, safetensors weights, tokenizer, image processor, generation config), saved with
`save_pretrained` so it loads through the production path (`pipelines.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from pipelines.prompt import template_words

FRAME_TOKEN = "<image>"  # the frame placeholder, as in TinyLLaVA's tokenizer; a special token
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", FRAME_TOKEN]

# Words of the change captions (synthetic scenes and the shared footage); prompts add their own.
CAPTION_WORDS = """
a an the this that it its one two three some someone something nothing other else another
person people man woman child car cars van truck bus bag box bicycle bike motorbike dog cat
vehicle vehicles object objects package suitcase cart door gate light shadow tree
red blue white black green yellow grey gray orange brown silver dark large small big
appeared arrived left parked was were is are removed moved placed entered exited walked walks
drove passed through stopped opened closed stayed turned went came picked dropped carried
in on at into onto off out from to of by near next behind front top bottom lower upper right
centre center middle side corner edge background foreground scene frame frames image view
no not visible change changes changed still same and or but then with without there here
""".split()


def tiny_vocabulary(words: Iterable[str] = ()) -> list[str]:
    """Specials first (ids 0-4), then caption words, prompt words, numbers 0-99 and 00-09."""
    numbers = [str(i) for i in range(100)] + [f"{i:02d}" for i in range(10)]
    rest = sorted({w.lower() for w in (*CAPTION_WORDS, *template_words(), *numbers, *words)} - set(SPECIAL_TOKENS))
    return SPECIAL_TOKENS + rest


def tiny_tokenizer(words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (lower-cased words and punctuation) with the frame placeholder
    registered as a special token, so it is never split."""
    vocab = {w: i for i, w in enumerate(tiny_vocabulary(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[FRAME_TOKEN],
        padding_side="left",
    )
    return fast


def tiny_llava_config(
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    hidden_size: int = 64,
    layers: int = 2,
    context_length: int = 512,
) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_length,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=SPECIAL_TOKENS.index(FRAME_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def tinyllava_15b_config(
    *, vocab_size: int = 32064, image_token_index: int = 32000, pad_token_id: int = 32001
) -> LlavaConfig:
    """The shapes of TinyLLaVA-1.5B (bczhou/tiny-llava-v1-hf, model-notes.md), for random weights in
    the benchmarks: TinyLlama-1.1B-Chat (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocab
    32064) + CLIP ViT-L/14 at 336 px (layer -2, CLS dropped: 576 tokens). A word-level test tokenizer
    passes its own placeholder and pad ids (its vocabulary fits in 32064)."""
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=max(vocab_size, 32064),
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_index,
        image_seq_length=(336 // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def save_tiny_llava(
    path: str | Path,
    *,
    words: Iterable[str] = (),
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    fan_in_init: bool = False,
) -> Path:
    """Write a tiny random LLaVA checkpoint to `path` (created) and return it. `words` are added
    to the default vocabulary. Same seed, same weights.

    `fan_in_init`: draw the LM's, projector's and lm_head's linear weights at std 1/sqrt(fan_in)
    instead of the config's 0.02, for a tiny model that is to be trained from scratch: at hidden
    size 64, std 0.02 makes attention logits ~0 and the LM sits on the language prior for
    thousands of steps before it starts reading the visual tokens."""
    if hidden_size > 64:
        raise ValueError("a tiny model has hidden_size <= 64")
    path = Path(path)
    tokenizer = tiny_tokenizer(words)
    config = tiny_llava_config(
        len(tokenizer), image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, layers=layers
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3, do_sample=False)
    if fan_in_init:
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, module in model.named_modules():
                text_side = "language_model" in name or "projector" in name or name == "lm_head"
                if isinstance(module, torch.nn.Linear) and text_side:
                    torch.nn.init.normal_(module.weight, std=module.in_features**-0.5)
    model.save_pretrained(path)  # safetensors
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(path)
    return path

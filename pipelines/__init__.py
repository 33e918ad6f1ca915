"""The change captioner: a small LLaVA-family vision-language model that turns a before/after pair
of camera frames into one short sentence per change. numpy/torch/transformers only; imports
neither `monitor` nor `finetune`.

Public API (the contract with monitor's VlmDescriber and with finetune):

    from pipelines.records import FrameInput, PairInput
        FrameInput(image, time, key=None)   # image (H, W, 3) uint8 RGB; time in seconds (UNIX or
                                            # media); key: frame-cache key e.g. (camera, seq)
        PairInput(before, after, regions_text="", history=())   # history: older frames, oldest
                                            # first (compressed mode only); .frames = history+before+after

    from pipelines.captioner import ChangeCaptioner
        cap = ChangeCaptioner.load(path, mode="compressed"|"pair", device=None, dtype=None,
                                   quantization=None|"none"|"8bit"|"4bit", adapter=None,
                                   content_grid=1, delta_tokens=2, batch_size=8, cache_frames=8)
            # path: a checkpoint dir or a repo id already in the HF cache; offline, safetensors.
            # A LLaVA checkpoint in compressed mode gets a fresh zero-shot compressor
            # (content_grid/delta_tokens apply); a saved CompressedCaptioner keeps its own.
        cap.model           # CompressedCaptioner ("compressed") or LlavaForConditionalGeneration ("pair")
        cap.tokenizer, cap.image_processor, cap.mode, cap.device, cap.processor (its ChangeProcessor)
        cap.collate(pairs, targets=None, *, multi_turn=True, frame_cache=False, answered=None) -> dict
            # targets None: inference batch, left padded. targets list[list[str]] (reference
            # sentences per pair, [] = "no visible change"): right padded + labels (-100 but the
            # answers); cap.model(**batch).loss is the training loss. multi_turn: one sentence per
            # turn ("What else changed?" between turns); False: one answer with every sentence.
            # Compressed batches hold pixel_values (N unique frames), frame_index (B, F), query_mask.
        cap.caption(pairs, *, max_new_tokens=32, turns=1) -> list[str]   # clean, batched == one-by-one;
            # turns (int or per pair): ask "What else changed?" after each new sentence, up to turns
        cap.generate(pairs, *, max_new_tokens=32, answered=None) -> list[str]  # one batch, raw text
        cap.load_adapter(path); cap.unload_adapter()            # peft LoRA, hot swap
        cap.warm_up(); cap.frame_cache (per-camera, by FrameInput.key)
        cap.pixel_values(frames) -> (N, 3, S, S); cap.side_by_side(pair) -> (3, S, S)
        cap.frame_features(frames) -> (N, P, Dv)   # through the frame cache

    from pipelines.processor import ChangeProcessor   # records -> tensors; no model weights
        ChangeProcessor(tokenizer, image_processor, *, mode, image_size, placeholder_id,
                        image_tokens, device, tokens_per_frame=None, delta_tokens=None)
            # built by ChangeCaptioner from its model's config; what cap.collate etc. delegate to
        .collate(pairs, targets=None, *, dtype, multi_turn=True, frame_features=None, answered=None)
            # as cap.collate; frame_features: frames -> (N, P, Dv) instead of pixel_values
        .pixel_values(frames, dtype) -> (N, 3, S, S) on the device; .side_by_side(pair) -> (3, S, S)

    from pipelines.compressed import CompressedCaptioner, CompressedCaptionerConfig, LORA_TARGET_MODULES
        CompressedCaptioner.from_llava(llava, content_grid=1, delta_tokens=2,
                                       context_temperature=0.07, delta_temperature=2.0)
        .compressor         # every trainable compression part (gates start at 0 = zero-shot)
        .model.{vision_tower, multi_modal_projector, language_model}, .lm_head (LLaVA's names;
        also as properties .vision_tower / .multi_modal_projector / .language_model)
        .vision_features(pixel_values) -> (N, P, Dv)   # what the frame cache keeps
        .to_llava()         # the plain LLaVA model sharing the modules (pair mode)
        forward(input_ids, pixel_values | frame_features, frame_index, query_mask,
                attention_mask, labels, ...)   # tokens_per_frame = 1 + content_grid**2
        LORA_TARGET_MODULES # regex: q/k/v/o/gate/up/down_proj of the language model only

    from pipelines.checkpoint import CheckpointError, inspect_checkpoint, resolve_checkpoint, load_model
        inspect_checkpoint(path) -> CheckpointInfo   # .to_dict(): architecture, parameters per
                            # part, dtype, image_size, lm_tokens_per_frame per mode, context_length
        CheckpointError     # one-line message naming the path and what is missing / wrong

    from pipelines.prompt import clean_caption, caption_sentences, NO_CHANGE, INSTRUCTION, NEXT_TURN
    from pipelines.tiny import save_tiny_llava   # save_tiny_llava(path, words=(), image_size=32,
                            # patch_size=8, hidden_size=64, layers=2, seed=0) -> Path: the test fixture
"""

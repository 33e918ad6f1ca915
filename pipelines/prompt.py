"""Prompts for the change captioner and the clean-up of what it writes.

A prompt is a list of `Piece`s: template text, the instruction (whose LM embeddings are the
context token's queries), visual placeholders, and answers (the only tokens with training labels).
`encode` turns them into token ids plus the two masks, one tokenizer call per piece, so the
inference and the training prompt are tokenised identically.

Vicuna-style turns, as TinyLLaVA was trained: `USER: ... ASSISTANT: answer</s>`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from pipelines.records import PairInput

INSTRUCTION = "What changed from before to after? Answer with one short sentence per change."
NEXT_TURN = "What else changed?"  # multi-turn training: one change sentence per turn
NO_CHANGE = "no visible change"

Role = Literal["template", "query", "visual", "answer"]


@dataclass(frozen=True)
class Piece:
    text: str = ""
    role: Role = "template"
    slots: int = 0  # visual: how many placeholder tokens


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    query_mask: list[bool]  # instruction tokens: the context token's queries
    label_mask: list[bool]  # answer tokens (and their end-of-sequence token): trained on


def clock(t: float) -> str:
    """08:14:03 (UTC clock of a UNIX time, or the HH:MM:SS offset of a media time)."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def gap_words(seconds: float) -> str:
    """'7 seconds later', '3 minutes later', '2 hours later'."""
    s = max(0.0, seconds)
    if s < 90:
        n, unit = round(s), "second"
    elif s < 90 * 60:
        n, unit = round(s / 60), "minute"
    else:
        n, unit = round(s / 3600), "hour"
    return f"{n} {unit}{'' if n == 1 else 's'} later"


def _instruction(pair: PairInput) -> list[Piece]:
    regions = pair.regions_text.strip().rstrip(".")
    ask = " ".join(pair.question.split()) if pair.question else INSTRUCTION
    text = f"{regions}. {ask}" if regions else ask
    return [Piece("\n"), Piece(text, "query"), Piece("\nASSISTANT:")]


def compressed_prompt(pair: PairInput, *, tokens_per_frame: int, delta_tokens: int) -> list[Piece]:
    """History frames (oldest first), before, after, then the change tokens, each with its time."""
    pieces = [Piece("USER:")]
    for frame in pair.history:
        pieces += [
            Piece(f" earlier, at {clock(frame.time)}:"),
            Piece(role="visual", slots=tokens_per_frame),
            Piece("\n"),
        ]
    after = f" after, at {clock(pair.after.time)}, {gap_words(pair.after.time - pair.before.time)}:"
    pieces += [
        Piece(f" before, at {clock(pair.before.time)}:"),
        Piece(role="visual", slots=tokens_per_frame),
        Piece("\n"),
        Piece(after),
        Piece(role="visual", slots=tokens_per_frame),
    ]
    if delta_tokens:
        pieces += [Piece("\nwhere it changed, before then after:"), Piece(role="visual", slots=delta_tokens)]
    return pieces + _instruction(pair)


def pair_prompt(pair: PairInput, *, image_tokens: int) -> list[Piece]:
    """One side-by-side image, earlier on the left, with all the checkpoint's visual tokens."""
    when = (
        f"one camera, side by side: on the left before, at {clock(pair.before.time)}; on the right after, "
        f"at {clock(pair.after.time)}, {gap_words(pair.after.time - pair.before.time)}."
    )
    return [Piece("USER:"), Piece(role="visual", slots=image_tokens), Piece("\n" + when), *_instruction(pair)]


def conversation(prompt: list[Piece], targets: list[str], *, multi_turn: bool = True) -> list[Piece]:
    """The training conversation: the prompt, then the reference sentences as answers. Multi-turn
    (the TinyLLaVA image-difference study's best format): one change sentence per turn, later turns
    asked with NEXT_TURN. Otherwise one answer holding every sentence. No sentence: NO_CHANGE."""
    sentences = [s.strip() for s in targets if s.strip()] or [NO_CHANGE]
    if not multi_turn:
        sentences = [" ".join(sentences)]
    pieces = list(prompt)
    for i, sentence in enumerate(sentences):
        if i:
            pieces += [Piece(f"USER: {NEXT_TURN}\nASSISTANT:")]
        pieces += [Piece(" " + sentence, "answer")]
    return pieces


def follow_up(prompt: list[Piece], answers: list[str]) -> list[Piece]:
    """Inference, turn 2 on: the earlier answers as turns, then NEXT_TURN for the next change."""
    return [*conversation(prompt, answers), Piece(f"USER: {NEXT_TURN}\nASSISTANT:")]


def encode(pieces: list[Piece], tokenizer, placeholder_id: int) -> Encoded:
    """Token ids (BOS first), the query mask and the label mask. Each answer ends with EOS."""
    ids: list[int] = []
    query: list[bool] = []
    label: list[bool] = []

    def add(new: list[int], is_query: bool = False, is_label: bool = False) -> None:
        ids.extend(new)
        query.extend([is_query] * len(new))
        label.extend([is_label] * len(new))

    if tokenizer.bos_token_id is not None:
        add([tokenizer.bos_token_id])
    for piece in pieces:
        if piece.role == "visual":
            add([placeholder_id] * piece.slots)
            continue
        tokens = tokenizer(piece.text, add_special_tokens=False)["input_ids"]
        if piece.role == "answer":
            add([*tokens, tokenizer.eos_token_id], is_label=True)
        else:
            add(tokens, is_query=piece.role == "query")
    return Encoded(ids, query, label)


def template_words() -> set[str]:
    """Every word and punctuation mark the prompts use (a tiny test vocabulary must cover them)."""
    import numpy as np

    from pipelines.records import FrameInput

    frame = FrameInput(np.zeros((1, 1, 3), np.uint8), 0.0)
    pair = PairInput(frame, frame, "the change is at the lower left", history=(frame,))
    pieces = conversation(compressed_prompt(pair, tokens_per_frame=2, delta_tokens=2), ["x", "y"])
    pieces += pair_prompt(pair, image_tokens=1)
    units = ["second", "seconds", "minute", "minutes", "hour", "hours"]
    text = " ".join([p.text for p in pieces if p.role != "answer"] + units + [NO_CHANGE])
    return set(re.findall(r"\w+|[^\w\s]", text.lower()))


# -- post-processing -----------------------------------------------------------------------
_NO_CHANGE_RE = re.compile(
    r"^(there (is|was|are|were) )?(no( visible| other)? changes?( visible)?|nothing( visible)?( else)?( has)?"
    r"( changed)?|no other change)$"
)
_LIST_MARK = re.compile(r"(?:^|(?<=\s))(?:\d{1,2}[.)]|[-*\u2022])\s+")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+|;\s*")
_TURN = re.compile(r"\b(USER|ASSISTANT)\s*:", re.IGNORECASE)


def _collapse_repeats(words: list[str]) -> list[str]:
    """'a car parked a car parked' -> 'a car parked' (degenerate greedy loops), n-grams up to 6."""
    out: list[str] = []
    for word in words:
        out.append(word)
        for n in range(1, 7):
            if len(out) >= 2 * n and [w.lower() for w in out[-n:]] == [w.lower() for w in out[-2 * n : -n]]:
                del out[-n:]
                break
    return out


def clean_caption(text: str) -> str:
    """One clean sentence per change ('a person arrived at the lower left.'), no repeats, no list
    numbering, no trailing conversation; NO_CHANGE when nothing else is left."""
    sentences = caption_sentences(text)
    return " ".join(sentences) if sentences else NO_CHANGE


def caption_sentences(text: str) -> list[str]:
    """The clean change sentences of a model's answer (each ending with "."); [] = no change."""
    text = _TURN.split(text, maxsplit=1)[0]  # the model went on to write the next turn
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)  # word-level tokenizers decode "left ."
    text = _LIST_MARK.sub("\n", text)
    sentences: list[str] = []
    seen: set[str] = set()
    for raw in _SPLIT.split(text):
        words = _collapse_repeats(re.sub(r"[.!?,:;\s]+$", "", raw.strip()).split())
        if not words or not re.search(r"\w", " ".join(words)):
            continue
        sentence = " ".join(words)
        norm = re.sub(r"[^\w ]", "", sentence.lower())
        if _NO_CHANGE_RE.match(norm):
            continue  # a change sentence wins over "no change" in the same answer
        if norm not in seen:
            seen.add(norm)
            sentences.append(sentence + ".")
    return sentences

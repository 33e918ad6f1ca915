"""The words of change captions: which way a sentence points (appeared vs left) and whether it
says there is no change. Used by the scores (direction and no-change accuracy) and by the
dataset converters (no-change paraphrases become "no visible change").

Direction of a sentence (`caption_direction`), from documented cue words:
  appeared: APPEAR_WORDS ("appeared", "arrived", "entered", "placed", "added", "new", "joined",
            "more", ...)
  left:     LEAVE_WORDS ("left", "gone", "removed", "missing", "disappeared", "fewer", "less", ...)
            or LEAVE_PHRASES ("no longer", "no more", "not there", ...). "left" is spatial, not a
            departure, after LEFT_SPATIAL_BEFORE words ("the", "lower", "top", "on", ...) or before
            LEFT_SPATIAL_AFTER words ("side", "corner", "of", ...).
  A sentence with cues of both kinds, or none ("moved", "changed"), has no direction.
Direction of a prediction against its references (`judge_direction`): each predicted sentence is
judged against the reference sentence it describes (the most shared content words), so a
correct "a van moved from the top to the centre" is not marked wrong because another reference
sentence says a car appeared; a sentence that describes an undirected change is not judged.
No-change: `is_no_change` recognises "no visible change" and the usual ways annotators say it
("no differences", "nothing changed", "i don't see any difference", "the images are the same").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipelines.prompt import caption_sentences

APPEAR_WORDS = frozenset(
    "appear appears appeared appearing arrive arrives arrived arriving enter enters entered entering "
    "placed added dropped new emerged emerges joined join joins more".split()
)
LEAVE_WORDS = frozenset(
    "left leave leaves leaving gone missing removed disappear disappears disappeared disappearing "
    "depart departs departed departing exit exits exited exiting vanished absent less fewer".split()
)
LEAVE_PHRASES = (
    "no longer",
    "no more",
    "not there",
    "not present",
    "not visible",
    "drove away",
    "walked away",
    "taken away",
)
LEFT_SPATIAL_BEFORE = frozenset(
    "the lower upper top bottom far to on at middle centre center front back from hand your its".split()
)
LEFT_SPATIAL_AFTER = frozenset(
    "side sides corner corners of hand half part edge most lane image picture photo frame".split()
)

_DIFF = r"(?:change|changes|changed|difference|differences|different|differents|diffrences|differnces)"
_ADJ = r"(?:visible |noticeable |apparent |obvious |significant |real |major )?"
_WHERE = r"(?: at all)?(?: (?:between|in) the (?:two )?(?:images|pictures|photos|frames))?(?: at all)?"
_NO_CHANGE = re.compile(
    r"(?:(?:there (?:is|are|was|were|seems to be|appears to be) |i (?:can )?see |i found )?"
    rf"(?:absolutely )?(?:no|nothing|not any|zero) {_ADJ}{_DIFF}{_WHERE}"
    r"|i (?:honestly |really )?(?:don't|don t|do not|can't|can t|cannot|can not) (?:see|find|spot|notice) any "
    rf"{_ADJ}{_DIFF}{_WHERE}"
    r"|nothing (?:has |have )?(?:changed|is different|different)"
    r"|(?:the )?(?:two )?(?:images|pictures|photos) (?:are|look) (?:the same|identical)"
    r"|(?:the )?same|identical|no change)"
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, contractions), punctuation dropped."""
    return _WORD.findall(text.lower())


def is_no_change(text: str) -> bool:
    """True for "no visible change" and the usual paraphrases; False for any described change."""
    return bool(_NO_CHANGE.fullmatch(" ".join(words(text))))


def caption_direction(text: str) -> str | None:
    """'appeared', 'left' or None (no cue, or cues of both kinds) for one sentence."""
    toks = words(text)
    joined = " " + " ".join(toks) + " "
    # "no more people": a departure, not "more"
    appear = any(t in APPEAR_WORDS and not (t == "more" and i and toks[i - 1] == "no") for i, t in enumerate(toks))
    leave = any(f" {p} " in joined for p in LEAVE_PHRASES)
    for i, t in enumerate(toks):
        if t not in LEAVE_WORDS:
            continue
        if t == "left":
            before = toks[i - 1] if i > 0 else ""
            after = toks[i + 1] if i + 1 < len(toks) else ""
            if before in LEFT_SPATIAL_BEFORE or after in LEFT_SPATIAL_AFTER:
                continue  # "the lower left", "on the left side": a place, not a departure
        leave = True
    if appear == leave:
        return None
    return "appeared" if appear else "left"


def references_direction(sentences: Sequence[str]) -> str | None:
    """The one direction all the directed references of a pair agree on, else None."""
    found = {d for d in map(caption_direction, sentences) if d is not None}
    return found.pop() if len(found) == 1 else None


# words that align a predicted sentence with the reference sentence it describes: not the
# direction cues ("left" stays: it is also a place), not the function words
_FUNCTION_WORDS = frozenset("moved a an the in on at from to of is are was were and there".split())
_NOT_CONTENT = (APPEAR_WORDS | LEAVE_WORDS | _FUNCTION_WORDS) - {"left"}


def _content_overlap(a: str, b: str) -> float:
    """Unigram F1 of the content words of two sentences."""
    wa = [w for w in words(a) if w not in _NOT_CONTENT]
    wb = [w for w in words(b) if w not in _NOT_CONTENT]
    common = sum(min(wa.count(w), wb.count(w)) for w in set(wa))
    return 2 * common / (len(wa) + len(wb)) if common else 0.0


def judge_direction(prediction: str, references: Sequence[str]) -> tuple[str, str | None] | None:
    """(the direction wanted, the direction said) for a prediction, or None when it is not judged.

    Each predicted sentence is judged against the reference sentence it shares the most content
    words with, when that one has a direction; with no shared word, against the one direction
    all the references agree on (if they do). "No change" for a pair with a directed reference
    is judged wrong. With several judged sentences the first wrong one is returned, else the
    first."""
    if all(is_no_change(r) for r in references):
        return None
    ref_dirs = [caption_direction(r) for r in references]
    if is_no_change(prediction):
        wanted = next((d for d in ref_dirs if d is not None), None)
        return None if wanted is None else (wanted, None)
    judged: list[tuple[str, str | None]] = []
    for sentence in caption_sentences(prediction):
        overlaps = [_content_overlap(sentence, r) for r in references]
        best = max(range(len(references)), key=overlaps.__getitem__)
        wanted = ref_dirs[best] if overlaps[best] > 0 else references_direction(references)
        if wanted is not None:
            judged.append((wanted, caption_direction(sentence)))
    wrong = [j for j in judged if j[0] != j[1]]
    return (wrong or judged or [None])[0]

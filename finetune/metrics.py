"""COCO-compatible caption scores (pycocoevalcap 1.2) plus direction and no-change accuracy.

Scores are exactly the COCO caption toolkit's: Stanford PTB tokenisation (lower-cased, the
toolkit's punctuation list removed), corpus-level BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D
(the toolkit's `Cider`: tf-idf from the references, Gaussian length penalty, clipped counts).
The PTB tokenizer and METEOR are Java programs shipped inside pycocoevalcap. The tokenizer is
run here from the package's own jar with the package's flags, but through stdin, because the
package writes a temporary file into its own install folder (read-only on system installs)
and lets Java print to our stderr. Without Java (or with `java=False`, e.g. fast periodic
evaluation while training) METEOR is skipped and tokenisation is approximated in Python;
`CaptionScores.notes` says so.

Direction accuracy: over the pairs whose prediction makes a direction claim about a directed
reference sentence (`finetune.language.judge_direction`: documented cue words; each predicted
sentence is judged against the reference sentence it describes), the share that point the same
way as it; "no change" for a changed pair counts as wrong.
`no_change_accuracy` is the share of no-change pairs (every reference says no change, as
`finetune.language.is_no_change` reads it) predicted as no change, `false_no_change` the share
of change pairs predicted as no change.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from finetune.language import (  # noqa: F401 - re-exported: the caption words are part of the scores' API
    APPEAR_WORDS,
    LEAVE_PHRASES,
    LEAVE_WORDS,
    caption_direction,
    is_no_change,
    judge_direction,
    references_direction,
    words,
)
from monitor.errors import MonitorError

# The COCO toolkit's punctuation list (pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS).
_PTB_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_JAVA_METRICS = "METEOR and the PTB tokenizer"


class ScoreInputError(MonitorError):
    """A bad references/predictions file: one line naming the file and the field."""


def java_available() -> bool:
    return shutil.which("java") is not None


@dataclass(frozen=True)
class CaptionScores:
    """Corpus scores of one system; None where a score was not computable (METEOR without Java,
    direction accuracy with no directed reference, ...)."""

    pairs: int
    bleu_1: float
    bleu_2: float
    bleu_3: float
    bleu_4: float
    meteor: float | None
    rouge_l: float
    cider_d: float
    direction_accuracy: float | None
    direction_pairs: int  # pairs judged for direction (finetune.language.judge_direction)
    no_change_accuracy: float | None
    no_change_pairs: int  # pairs whose references all say "no change"
    false_no_change: float | None  # change pairs predicted as "no change"
    tokenizer: str  # "ptb-java" (COCO) or "python-approx"
    notes: tuple[str, ...] = ()
    per_pair: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    # (field, label) for tables and charts, in the usual order
    TABLE = (
        ("bleu_1", "BLEU-1"),
        ("bleu_2", "BLEU-2"),
        ("bleu_3", "BLEU-3"),
        ("bleu_4", "BLEU-4"),
        ("meteor", "METEOR"),
        ("rouge_l", "ROUGE-L"),
        ("cider_d", "CIDEr-D"),
        ("direction_accuracy", "direction acc"),
        ("no_change_accuracy", "no-change acc"),
        ("false_no_change", "false no-change"),
    )

    def as_dict(self, per_pair: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d.pop("per_pair")
        if per_pair:
            d["per_pair"] = list(self.per_pair)
        return d

    def table(self) -> str:
        rows = []
        for key, label in self.TABLE:
            value = getattr(self, key)
            text = "-" if value is None else f"{value:.4f}"
            if key == "direction_accuracy":
                text += f"  ({self.direction_pairs} pairs judged)"
            elif key == "no_change_accuracy":
                text += f"  ({self.no_change_pairs} no-change pairs)"
            rows.append(f"{label:<16} {text}")
        rows.append(f"{'pairs':<16} {self.pairs}  (tokenizer {self.tokenizer})")
        return "\n".join(rows)


# -- tokenisation -----------------------------------------------------------------------------
def _ptb_java(sentences: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer, fed through stdin: same jar, flags and punctuation removal."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
    text = "\n".join(s.replace("\n", " ") for s in sentences)
    proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=False)
    lines = proc.stdout.decode().split("\n")
    if proc.returncode != 0 or len(lines) < len(sentences):
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MonitorError(f"PTB tokenizer (java) failed: {err[-1] if err else f'exit code {proc.returncode}'}")
    punct = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines[: len(sentences)]]


_PY_SPLITS = [
    (re.compile(r"([^\w\s'])"), r" \1 "),  # punctuation is its own token
    (re.compile(r"(?i)\b(ca|wo|do|does|did|is|are|was|were|has|have|had|could|should|would)(n't)\b"), r"\1 \2"),
    (re.compile(r"(?i)'(s|re|ve|ll|d|m)\b"), r" '\1"),
]


def _ptb_python(sentences: list[str]) -> list[str]:
    """A close Python approximation of the PTB tokenizer (no Java): lower-case, split off
    punctuation and clitics ("isn't" -> "is n't", "car's" -> "car 's"), drop COCO's punctuation."""
    out = []
    for s in sentences:
        s = s.lower().replace("\n", " ")
        for pattern, repl in _PY_SPLITS:
            s = pattern.sub(repl, s)
        out.append(" ".join(t for t in s.split() if t not in _PTB_PUNCT and t.strip("'")))
    return out


def tokenize(captions: Mapping[str, Sequence[str]], *, java: bool) -> dict[str, list[str]]:
    """{pair id: [sentences]} -> {pair id: [tokenised sentences]} (one process for everything)."""
    keys = [k for k, v in captions.items() for _ in v]
    flat = [s for v in captions.values() for s in v]
    toks = _ptb_java(flat) if java else _ptb_python(flat)
    out: dict[str, list[str]] = {k: [] for k in captions}
    for k, t in zip(keys, toks):
        out[k].append(t)
    return out


@cache
def _meteor_process() -> Any:
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    """METEOR 1.5 through one long-lived Java process (its start-up costs seconds)."""
    meteor = _meteor_process()
    if meteor.meteor_p.poll() is not None:  # the process died: start a fresh one
        _meteor_process.cache_clear()
        meteor = _meteor_process()
    try:
        score, scores = meteor.compute_score(gts, res)
    except (ValueError, BrokenPipeError) as exc:
        _meteor_process.cache_clear()
        raise MonitorError(f"METEOR (java) failed: {exc}") from None
    return float(score), [float(s) for s in scores]


# -- scoring ----------------------------------------------------------------------------------
def score_captions(
    references: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    *,
    java: bool | None = None,
) -> CaptionScores:
    """Score one prediction per pair against that pair's reference sentences.

    `java=None` uses Java when it is on PATH (COCO-exact), else the Python fallback with a
    note; `java=False` always uses the fallback (no METEOR); `java=True` requires Java."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    predictions = {str(k): v for k, v in predictions.items()}
    references = {str(k): v for k, v in references.items()}
    ids = list(predictions)
    missing = [k for k in ids if k not in references]
    if missing:
        raise ScoreInputError(f"prediction for pair {missing[0]!r} has no references ({len(missing)} such pairs)")
    if not ids:
        raise ScoreInputError("no predictions to score")
    empty = [k for k in ids if not references[k]]
    if empty:
        raise ScoreInputError(f"pair {empty[0]!r} has no reference sentences")
    notes: list[str] = []
    if java is None:
        java = java_available()
        if not java:
            notes.append(
                f"java not found on PATH: {_JAVA_METRICS} need it (apt-get install default-jre-headless); "
                "METEOR skipped, PTB tokenisation approximated in Python, so BLEU/ROUGE-L/CIDEr-D may differ "
                "slightly from COCO"
            )
    elif java and not java_available():
        raise MonitorError(f"java not found on PATH: {_JAVA_METRICS} need it (apt-get install default-jre-headless)")
    elif not java:
        notes.append("java disabled: METEOR skipped, PTB tokenisation approximated in Python")

    refs = {k: list(references[k]) for k in ids}
    preds = {k: [predictions[k]] for k in ids}
    gts, res = tokenize(refs, java=java), tokenize(preds, java=java)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    meteor, meteor_each = _meteor(gts, res) if java else (None, [None] * len(ids))

    directed = nc_hits = nc_pairs = false_nc = change_pairs = 0
    dir_hits = 0
    per_pair = []
    for i, k in enumerate(ids):
        judged = judge_direction(predictions[k], refs[k])
        want, got = judged or (None, None)
        ref_nc = all(is_no_change(s) for s in refs[k])
        pred_nc = is_no_change(predictions[k])
        if judged is not None:
            directed += 1
            dir_hits += got == want
        if ref_nc:
            nc_pairs += 1
            nc_hits += pred_nc
        else:
            change_pairs += 1
            false_nc += pred_nc
        per_pair.append(
            {
                "id": k,
                "prediction": predictions[k],
                "references": refs[k],
                "cider_d": round(float(cider_each[i]), 4),
                "rouge_l": round(float(rouge_each[i]), 4),
                "meteor": None if meteor_each[i] is None else round(meteor_each[i], 4),
                "direction": {"reference": want, "predicted": got},
                "no_change": {"reference": ref_nc, "predicted": pred_nc},
            }
        )
    return CaptionScores(
        pairs=len(ids),
        bleu_1=float(bleu[0]),
        bleu_2=float(bleu[1]),
        bleu_3=float(bleu[2]),
        bleu_4=float(bleu[3]),
        meteor=meteor,
        rouge_l=float(rouge),
        cider_d=float(cider),
        direction_accuracy=dir_hits / directed if directed else None,
        direction_pairs=directed,
        no_change_accuracy=nc_hits / nc_pairs if nc_pairs else None,
        no_change_pairs=nc_pairs,
        false_no_change=false_nc / change_pairs if change_pairs else None,
        tokenizer="ptb-java" if java else "python-approx",
        notes=tuple(notes),
        per_pair=tuple(per_pair),
    )


# -- COCO caption files -----------------------------------------------------------------------
def _read_json(path: Path, role: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScoreInputError(f"{role} file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoreInputError(f"{role} file unreadable: {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScoreInputError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _captions(items: Any, path: Path, where: str) -> list[tuple[str, str]]:
    if not isinstance(items, list):
        raise ScoreInputError(f"{path}: {where}: expected a list of {{image_id, caption}} objects")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScoreInputError(f"{path}: {where}[{i}]: expected an object with image_id and caption")
        for key in ("image_id", "caption"):
            if key not in item:
                raise ScoreInputError(f"{path}: {where}[{i}]: missing key {key!r}")
        image_id, caption = item["image_id"], item["caption"]
        if not isinstance(image_id, str | int) or isinstance(image_id, bool):
            raise ScoreInputError(f"{path}: {where}[{i}].image_id: expected a string or integer")
        if not isinstance(caption, str):
            raise ScoreInputError(f"{path}: {where}[{i}].caption: expected a string")
        out.append((str(image_id), caption))
    return out


def load_coco_references(path: str | Path) -> dict[str, list[str]]:
    """A COCO caption ground-truth file ({"annotations": [{"image_id", "caption"}, ...], ...})
    -> {image id: [sentences]}. Image ids are compared as strings (256 == "256")."""
    path = Path(path)
    data = _read_json(path, "references")
    if isinstance(data, dict):
        if "annotations" not in data:
            raise ScoreInputError(f"{path}: missing key 'annotations' (a COCO caption references file)")
        items = _captions(data["annotations"], path, "annotations")
    else:
        items = _captions(data, path, "annotations")  # a bare annotation list is accepted too
    refs: dict[str, list[str]] = {}
    for image_id, caption in items:
        refs.setdefault(image_id, []).append(caption)
    if not refs:
        raise ScoreInputError(f"{path}: annotations: empty")
    return refs


def load_coco_predictions(path: str | Path, references: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """A COCO results file ([{"image_id", "caption"}, ...], one per image) -> {image id: caption};
    with `references`, every image id must have references."""
    path = Path(path)
    items = _captions(_read_json(path, "predictions"), path, "predictions")
    preds: dict[str, str] = {}
    for i, (image_id, caption) in enumerate(items):
        if image_id in preds:
            raise ScoreInputError(f"{path}: predictions[{i}].image_id {image_id!r}: a second prediction for it")
        if references is not None and image_id not in references:
            raise ScoreInputError(f"{path}: predictions[{i}].image_id {image_id!r}: not in the references")
        preds[image_id] = caption
    if not preds:
        raise ScoreInputError(f"{path}: predictions: empty")
    return preds


def write_coco(
    refs_path: Path, preds_path: Path, references: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> None:
    """Write references and predictions as COCO caption files (what `finetune score` reads)."""
    ids = list(predictions)
    sentences = [(k, s) for k in ids for s in references[k]]
    annotations = [{"image_id": k, "caption": s, "id": n} for n, (k, s) in enumerate(sentences)]
    refs = {"type": "captions", "images": [{"id": k} for k in ids], "annotations": annotations}
    refs_path.write_text(json.dumps(refs, indent=1) + "\n")
    preds_path.write_text(json.dumps([{"image_id": k, "caption": predictions[k]} for k in ids], indent=1) + "\n")

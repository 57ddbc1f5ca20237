"""One body with holes for many rendered messages (SendGrid's
`personalizations` + `substitutions`).

A campaign renders every recipient's message in full (variables, signed
tracking links, unsubscribe URL), so what differs between two messages is
not known in advance. `SharedBody` finds it: the static pieces common to a
few sample bodies (a token diff, once per batch), then each message is
fitted to those pieces with `str.find` — the text between two pieces is
that message's hole value. The decomposition rebuilds each message
exactly by construction (hole, piece, hole, …, piece, hole), so a diff
that matches badly only makes holes bigger, never a message wrong; a
message that does not fit (other control flow in its template) or whose
holes are too big for the provider is left for another group or a
single send.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
# Pieces shorter than this become part of the holes around them: a key
# costs about as many bytes as it saves, and tiny pieces fit anywhere.
MIN_PIECE = 8
# Samples the skeleton is refined with before misfits are left over.
MAX_SAMPLES = 4


def _tokens(text: str) -> list[int]:
    """Start offsets of the tokens of `text`, and its length last."""
    return [m.start() for m in _TOKEN.finditer(text)] + [len(text)]


def _matched(reference: str, other: str) -> list[tuple[int, int, int]]:
    """Blocks (start in reference, start in other, length) in characters
    that the two texts share, in order (a token diff)."""
    ref_at, other_at = _tokens(reference), _tokens(other)
    ref_tokens = [reference[a:b] for a, b in itertools.pairwise(ref_at)]
    other_tokens = [other[a:b] for a, b in itertools.pairwise(other_at)]
    blocks = SequenceMatcher(None, ref_tokens, other_tokens, autojunk=False).get_matching_blocks()
    return [(ref_at[a], other_at[b], ref_at[a + n] - ref_at[a]) for a, b, n in blocks if n]


def skeleton(samples: Sequence[str]) -> list[str]:
    """The static pieces every sample holds, in order: runs of the first
    sample matched in every other one, cut wherever one of them jumps."""
    reference = samples[0]
    if len(samples) == 1:
        return [reference] if reference else []
    covered = [0] * (len(reference) + 1)
    cuts: set[int] = set()
    for other in samples[1:]:
        for start, _, size in _matched(reference, other):
            covered[start] += 1
            covered[start + size] -= 1
            cuts.update((start, start + size))
    need = len(samples) - 1
    pieces: list[str] = []
    depth, run_start = 0, None
    for i in range(len(reference)):
        depth += covered[i]
        if run_start is not None and (depth != need or i in cuts):
            pieces.append(reference[run_start:i])
            run_start = None
        if run_start is None and depth == need:
            run_start = i
    if run_start is not None:
        pieces.append(reference[run_start:])
    return [p for p in pieces if len(p) >= MIN_PIECE]


def fit(text: str, pieces: Sequence[str]) -> list[str] | None:
    """The holes of `text` around `pieces` (one more than pieces), or None
    when the pieces are not all in it in order. Leftmost matching finds a
    fit whenever one exists."""
    holes: list[str] = []
    cursor = 0
    for piece in pieces:
        at = text.find(piece, cursor)
        if at < 0:
            return None
        holes.append(text[cursor:at])
        cursor = at + len(piece)
    holes.append(text[cursor:])
    return holes


@dataclass
class SharedBody:
    """A body template (pieces joined by substitution keys) and each
    fitted message's values for those keys."""

    template: str
    values: list[dict[str, str]]  # per fitted message, in the order given


def share(
    texts: Sequence[Sequence[str]], budget: int, forbidden: Sequence[str] = ()
) -> tuple[list[SharedBody], list[int]]:
    """Fit many messages, each given as its parts (e.g. text and HTML), to
    one template per part. Returns one SharedBody per part (its `values`
    in the order of the fitted messages) and the indexes of the messages
    that fitted. A message fits when every part fits and its substitutions
    (keys and values, UTF-8) take at most `budget` bytes. Keys carry a
    random tail that no part and nothing in `forbidden` contains, so a key
    can only ever stand for its hole."""
    if not texts:
        return [], []
    prefix = _free_prefix(texts, forbidden)
    n_parts = len(texts[0])
    indexes = list(range(len(texts)))
    part_pieces: list[list[str]] = []
    for part in range(n_parts):
        samples = [texts[0][part]] + ([texts[len(texts) // 2][part]] if len(texts) > 1 else [])
        pieces = skeleton(samples)
        for _ in range(MAX_SAMPLES - len(samples)):
            misfit = next((i for i in indexes if fit(texts[i][part], pieces) is None), None)
            if misfit is None:
                break
            samples.append(texts[misfit][part])
            pieces = skeleton(samples)
        part_pieces.append(pieces)
    fitted: list[int] = []
    holes_of: list[list[list[str]]] = []
    for i in indexes:
        holes = [fit(texts[i][part], part_pieces[part]) for part in range(n_parts)]
        if any(h is None for h in holes):
            continue
        fitted.append(i)
        holes_of.append(holes)  # type: ignore[arg-type]
    # A hole empty in every fitted message needs no key.
    bodies: list[SharedBody] = []
    keys_of: list[list[str | None]] = []
    for part in range(n_parts):
        pieces = part_pieces[part]
        keys: list[str | None] = []
        out: list[str] = []
        for h in range(len(pieces) + 1):
            used = any(holes[part][h] for holes in holes_of)
            key = f"{prefix}{part}_{h}%" if used else None
            keys.append(key)
            if key:
                out.append(key)
            if h < len(pieces):
                out.append(pieces[h])
        keys_of.append(keys)
        bodies.append(SharedBody("".join(out), []))
    kept: list[int] = []
    for i, holes in zip(fitted, holes_of, strict=True):
        values = [
            {key: value for key, value in zip(keys_of[part], holes[part], strict=True) if key}
            for part in range(n_parts)
        ]
        size = sum(len(k) + len(v.encode()) for part in values for k, v in part.items())
        if size > budget:
            continue
        kept.append(i)
        for part in range(n_parts):
            bodies[part].values.append(values[part])
    return bodies, kept


def _free_prefix(texts: Sequence[Sequence[str]], forbidden: Sequence[str]) -> str:
    while True:
        prefix = f"%mp{secrets.token_hex(4)}_"
        if not any(prefix in t for parts in texts for t in parts) and not any(prefix in f for f in forbidden):
            return prefix

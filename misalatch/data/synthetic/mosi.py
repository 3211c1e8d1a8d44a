"""The built-in SYNTHETIC, MOSI-shaped dataset: the default data when no real files are given.

Real MOSI acoustic/visual features are not available to the project (DATA.md §13.7), yet every
command must run end to end on a fresh checkout. ``make_synthetic_mosi`` generates, from a seed,
a dataset with MOSI's shape: lower-case English sentences built from sentiment templates and a small
lexicon, one acoustic (74-d, COVAREP-sized) and one visual (47-d, FACET-sized) step per word, labels
in [-3, 3] on a 1/3 grid, sentence lengths drawn like MOSI's (mean ~12.6 words, median 10, p95 ~28).

How the label is made (so that fusion matters):

* a common sentiment ``c`` plus a private deviation per modality gives ``s_t``, ``s_a``, ``s_v``;
  the label is ``0.5 s_t + 0.25 s_a + 0.25 s_v`` rounded to the 1/3 grid and clipped to [-3, 3];
* the words express ``s_t`` through the lexicon (adjective strength, intensifiers, negation), so
  text alone is quantised and noisy;
* the acoustic and visual sequences are N(0, 1) noise plus a per-segment (speaker) offset, with the
  sentiment written as a word-level pattern: at the words of each sentiment phrase, and fading over
  the two words after it, a few fixed feature dimensions move with ``s_a`` / ``s_v`` (valence,
  arousal, smile, frown). Because the cue is a within-segment pattern it survives per-segment
  z-normalisation;
* in a fraction of samples (``sarcasm_rate``, "sarcasm-like") the words are positive while voice
  and face are negative, and the label follows the non-verbal cue. Their ids are in
  ``meta["sarcastic_ids"]``.

Every number produced from this data is synthetic (``CanonicalDataset.synthetic`` is True) and
must never be compared with published results.
"""

from __future__ import annotations

import math

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import ConfigError

GENERATOR_VERSION = 1

# Feature dimensions that carry the sentiment cue (the rest is noise). Fixed, so that tests and
# diagnostics can look at them; documented in ``meta["cue_dims"]``.
ACOUSTIC_VALENCE_DIMS: tuple[int, ...] = (0, 1)  # move with s_a (signed)
ACOUSTIC_AROUSAL_DIMS: tuple[int, ...] = (2,)  # move with |s_a|
VISUAL_SMILE_DIMS: tuple[int, ...] = (0, 1)  # move with max(s_v, 0)
VISUAL_FROWN_DIMS: tuple[int, ...] = (2, 3)  # move with max(-s_v, 0)
VISUAL_VALENCE_DIMS: tuple[int, ...] = (4,)  # move with s_v (signed)
MIN_ACOUSTIC_DIM = 1 + max(ACOUSTIC_VALENCE_DIMS + ACOUSTIC_AROUSAL_DIMS)
MIN_VISUAL_DIM = 1 + max(VISUAL_SMILE_DIMS + VISUAL_FROWN_DIMS + VISUAL_VALENCE_DIMS)

# MOSI words per segment: a rounded log-normal matched to the real transcripts (mean 12.6,
# median 10, p95 28, max 114; DATA.md §13.1), clipped to [1, 114].
LENGTH_LOG_MEAN = 2.35
LENGTH_LOG_STD = 0.6
MAX_WORDS = 114

# Latent sentiment: common part ~ N(COMMON_MEAN, COMMON_SD), private part per modality ~ N(0, PRIVATE_SD).
# COMMON_MEAN > 0 because the negative sarcastic samples pull the label mean back to MOSI's ~0.07.
COMMON_MEAN = 0.25
COMMON_SD = 1.3
PRIVATE_SD = 0.6
SARCASM_MIN = 0.8  # sarcastic samples: words at least this positive, A/V at least this negative
CUE_GAIN = 1.0  # non-verbal cue amplitude per unit of sentiment (noise has unit variance)
SPEAKER_SD = 0.5  # per-segment offset of every A/V feature

# ---- lexicon: adjectives by polarity and strength (1 weak .. 3 strong) ----
POSITIVE: dict[int, tuple[str, ...]] = {
    1: ("nice", "decent", "pleasant", "cute", "solid", "sweet"),
    2: ("good", "fun", "funny", "enjoyable", "interesting", "entertaining"),
    3: ("great", "amazing", "awesome", "excellent", "fantastic", "wonderful", "brilliant", "perfect"),
}
NEGATIVE: dict[int, tuple[str, ...]] = {
    1: ("boring", "weird", "slow", "predictable", "silly", "forgettable"),
    2: ("bad", "annoying", "stupid", "disappointing", "dull", "lame"),
    3: ("terrible", "awful", "horrible", "pathetic", "dreadful", "atrocious"),
}
NEUTRAL: tuple[str, ...] = ("okay", "fine", "alright", "average", "normal", "different", "long")
INTENSIFIERS: tuple[str, ...] = ("really", "very", "so", "extremely", "super", "totally")
NEGATIONS: tuple[str, ...] = ("not", "never")
NOUNS: tuple[str, ...] = (
    "movie", "film", "story", "plot", "acting", "ending", "music", "script", "cast", "soundtrack",
    "dialogue", "humor", "sequel", "trailer", "villain", "director", "effects", "characters",
)
# Clause templates around a sentiment phrase {p}; {n} is a noun. MOSI transcripts are lower-case
# and unpunctuated.
TEMPLATES: tuple[str, ...] = (
    "the {n} was {p}",
    "i thought the {n} was {p}",
    "it was {p}",
    "this {n} is {p}",
    "honestly the {n} is {p}",
    "i found it {p}",
    "i think it was {p}",
    "the {n} was just {p}",
    "overall it was {p}",
    "the whole {n} felt {p}",
)
# Neutral filler clauses that pad a segment to its drawn length.
FILLERS: tuple[str, ...] = (
    "um", "uh", "so", "and", "but", "i mean", "you know", "like", "basically", "i guess",
    "and then", "to be honest", "kind of", "at the beginning", "in the end", "the whole time",
    "i went to see it with my friends", "it came out last week", "he plays the main character",
    "there is a scene where", "she has to fight", "they go back to the house",
    "i saw it on friday", "the {n} has a lot of {n}", "if you have seen the first one",
    "it is about a guy who", "and there was the {n}", "i was expecting the {n}",
)


def _render(rng: np.random.Generator, template: str, phrase: list[str]) -> tuple[list[str], list[int]]:
    """Fill a template; return its words and the positions of the phrase words."""
    words: list[str] = []
    positions: list[int] = []
    for tok in template.split():
        if tok == "{p}":
            positions.extend(range(len(words), len(words) + len(phrase)))
            words.extend(phrase)
        elif tok == "{n}":
            words.append(NOUNS[rng.integers(len(NOUNS))])
        else:
            words.append(tok)
    return words, positions


def _phrase(rng: np.random.Generator, score: float, max_len: int) -> list[str]:
    """Words expressing a text sentiment ``score`` (at most ``max_len`` words).

    |score| < 0.5 -> a neutral adjective; otherwise level = round(|score|) in 1..3, said with a
    plain adjective, an intensifier plus a weaker adjective, or (level 1) a negated opposite.
    """
    if abs(score) < 0.5:
        return [NEUTRAL[rng.integers(len(NEUTRAL))]]
    level = int(min(3, max(1, round(abs(score)))))
    same, other = (POSITIVE, NEGATIVE) if score > 0 else (NEGATIVE, POSITIVE)
    form = rng.random()
    if max_len >= 2 and level == 1 and form < 0.35:  # "not bad" = weakly positive
        return [NEGATIONS[rng.integers(len(NEGATIONS))], other[2][rng.integers(len(other[2]))]]
    if max_len >= 2 and level >= 2 and form < 0.4:  # "really good" = strong
        return [INTENSIFIERS[rng.integers(len(INTENSIFIERS))], same[level - 1][rng.integers(len(same[level - 1]))]]
    return [same[level][rng.integers(len(same[level]))]]


def _sentence(rng: np.random.Generator, length: int, score: float) -> tuple[list[str], list[int]]:
    """A sentence of exactly ``length`` words expressing ``score``; returns words and cue positions."""
    n_clauses = 1 + (length - 1) // 14  # longer segments repeat the opinion
    clauses: list[tuple[list[str], list[int]]] = []
    budget = length
    for _ in range(n_clauses):
        phrase = _phrase(rng, score, budget)
        fitting = [t for t in TEMPLATES if len(t.split()) - 1 + len(phrase) <= budget]
        if fitting and rng.random() < 0.85:
            clause = _render(rng, fitting[rng.integers(len(fitting))], phrase)
        else:
            clause = (phrase, list(range(len(phrase))))
        clauses.append(clause)
        budget -= len(clause[0])
        if budget <= 0:
            break
    # Interleave filler clauses before / between / after the opinion clauses.
    pieces: list[tuple[list[str], list[int]]] = []
    filler_words = budget
    slots = len(clauses) + 1
    fillers: list[list[list[str]]] = [[] for _ in range(slots)]
    while filler_words > 0:
        fitting = [f for f in FILLERS if len(f.split()) <= filler_words]  # single words always fit
        words, _ = _render(rng, fitting[rng.integers(len(fitting))], [])
        fillers[rng.integers(slots)].append(words)
        filler_words -= len(words)
    for i in range(slots):
        for words in fillers[i]:
            pieces.append((words, []))
        if i < len(clauses):
            pieces.append(clauses[i])
    out: list[str] = []
    cue: list[int] = []
    for words, positions in pieces:
        cue.extend(len(out) + p for p in positions)
        out.extend(words)
    return out, cue


def _cue_profile(length: int, cue: list[int]) -> np.ndarray:
    """(T,) weight of the non-verbal cue per word: 1 on the phrase, fading 0.5, 0.25 after it."""
    prof = np.zeros(length)
    for pos in cue:
        for k, w in enumerate((1.0, 0.5, 0.25)):
            if pos + k < length:
                prof[pos + k] = max(prof[pos + k], w)
    return prof


def _segment(rng: np.random.Generator, seg_id: str, *, sarcastic: bool, acoustic_dim: int,
             visual_dim: int) -> Segment:
    length = int(np.clip(round(math.exp(rng.normal(LENGTH_LOG_MEAN, LENGTH_LOG_STD))), 1, MAX_WORDS))
    if sarcastic:
        # Words positive, voice and face clearly negative; the label follows the non-verbal cue.
        c = -(SARCASM_MIN + abs(rng.normal(0.0, 0.6)))
        s_a = c + rng.normal(0.0, 0.3)
        s_v = c + rng.normal(0.0, 0.3)
        s_t = SARCASM_MIN + abs(rng.normal(0.0, 0.6))
        y = 0.5 * s_a + 0.5 * s_v
    else:
        c = rng.normal(COMMON_MEAN, COMMON_SD)
        s_t, s_a, s_v = (c + rng.normal(0.0, PRIVATE_SD, size=3)).tolist()
        y = 0.5 * s_t + 0.25 * s_a + 0.25 * s_v
    label = float(np.clip(round(3.0 * y) / 3.0, -3.0, 3.0))
    words, cue = _sentence(rng, length, s_t)
    prof = CUE_GAIN * _cue_profile(length, cue)[:, None]  # (T, 1)

    # Acoustic (T, d_a): noise + speaker offset + cue pattern on the valence / arousal dims.
    acoustic = rng.standard_normal((length, acoustic_dim)) + rng.normal(0.0, SPEAKER_SD, size=acoustic_dim)
    acoustic[:, ACOUSTIC_VALENCE_DIMS] += s_a * prof
    acoustic[:, ACOUSTIC_AROUSAL_DIMS] += abs(s_a) * prof
    # Visual (T, d_v): same idea with smile / frown / valence dims.
    visual = rng.standard_normal((length, visual_dim)) + rng.normal(0.0, SPEAKER_SD, size=visual_dim)
    visual[:, VISUAL_SMILE_DIMS] += max(s_v, 0.0) * prof
    visual[:, VISUAL_FROWN_DIMS] += max(-s_v, 0.0) * prof
    visual[:, VISUAL_VALENCE_DIMS] += s_v * prof
    return Segment(id=seg_id, label=label, words=words, visual=visual.astype(np.float32),
                   acoustic=acoustic.astype(np.float32))


def make_synthetic_mosi(*, n_train: int = 600, n_valid: int = 120, n_test: int = 200, seed: int = 0,
                        visual_dim: int = 47, acoustic_dim: int = 74,
                        sarcasm_rate: float = 0.08) -> CanonicalDataset:
    """Generate the SYNTHETIC MOSI-shaped dataset ``synthetic-mosi`` (see the module docstring).

    Bit-identical for the same arguments. Each split has its own random stream (spawned from
    ``seed``), so changing ``n_train`` does not change valid/test, and a smaller split is a prefix
    of a larger one. Ids are ``synth_00000``, ... numbered over train, valid, test.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"synthetic data: n_{split} must be a positive integer, got {n!r}")
    if acoustic_dim < MIN_ACOUSTIC_DIM:
        raise ConfigError(f"synthetic data: acoustic_dim must be >= {MIN_ACOUSTIC_DIM}, got {acoustic_dim}")
    if visual_dim < MIN_VISUAL_DIM:
        raise ConfigError(f"synthetic data: visual_dim must be >= {MIN_VISUAL_DIM}, got {visual_dim}")
    if not 0.0 <= sarcasm_rate <= 1.0:
        raise ConfigError(f"synthetic data: sarcasm_rate must be in [0, 1], got {sarcasm_rate}")

    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    splits: dict[str, list[Segment]] = {}
    sarcastic_ids: list[str] = []
    next_id = 0
    for split, stream in zip(SPLITS, streams):
        rng = np.random.default_rng(stream)
        segs = []
        for _ in range(sizes[split]):
            seg_id = f"synth_{next_id:05d}"
            next_id += 1
            sarcastic = bool(rng.random() < sarcasm_rate)
            if sarcastic:
                sarcastic_ids.append(seg_id)
            segs.append(_segment(rng, seg_id, sarcastic=sarcastic, acoustic_dim=acoustic_dim,
                                 visual_dim=visual_dim))
        splits[split] = segs

    meta = {
        "description": "SYNTHETIC data generated by misalatch (not MOSI); never compare with published results",
        "generator": f"misalatch.data.synthetic.make_synthetic_mosi v{GENERATOR_VERSION}",
        "options": {"n_train": int(n_train), "n_valid": int(n_valid), "n_test": int(n_test), "seed": int(seed),
                    "visual_dim": int(visual_dim), "acoustic_dim": int(acoustic_dim),
                    "sarcasm_rate": float(sarcasm_rate)},
        "cue_dims": {"acoustic_valence": list(ACOUSTIC_VALENCE_DIMS), "acoustic_arousal": list(ACOUSTIC_AROUSAL_DIMS),
                     "visual_smile": list(VISUAL_SMILE_DIMS), "visual_frown": list(VISUAL_FROWN_DIMS),
                     "visual_valence": list(VISUAL_VALENCE_DIMS)},
        "sarcastic_ids": sarcastic_ids,
        "dropped": {},
    }
    return CanonicalDataset(name="synthetic-mosi", task="regression", splits=splits, alignment="word",
                            num_classes=1, synthetic=True, meta=meta)

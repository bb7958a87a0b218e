"""CLIP's byte-level BPE tokenizer, written from the algorithm, on the stdlib only.

Vocabulary (`assets/bpe_simple_vocab_16e6.txt.gz`, from OpenAI CLIP via open_clip, MIT): the 256 byte
symbols, the same 256 with the end-of-word marker `</w>`, one symbol per merge rule (48,894 rules, in rank
order) and the two special tokens: 49,408 ids, start-of-text 49406, end-of-text 49407, padding 0.

Text is cleaned as CLIP does (HTML entities unescaped twice, whitespace collapsed, lower-cased) and split
into words with the semantics of CLIP's pre-tokenisation pattern
`<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`,
implemented as a small scanner over Unicode categories instead of the third-party `regex` module
(stdlib `re` has no `\\p{..}` classes). Deviation: CLIP first runs `ftfy.fix_text`; we apply only the
parts of it that change well-formed text (NFC, straight quotes, Latin ligatures, full-width forms,
control characters), not its mojibake repair nor its own HTML unescaping (which only matters for text
escaped three or more times), so ids match CLIP on ordinary text, ASCII or not.
"""

from __future__ import annotations

import gzip
import html
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from .errors import TokenizerError

DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 48894
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_SPECIALS = (START_OF_TEXT, END_OF_TEXT)

# Pieces of ftfy.fix_text that matter for well-formed text.
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_COMPAT_FORMS = re.compile("[\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06\u3000\uff01-\uffee]")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]")
_WHITESPACE = re.compile(r"\s+")


def byte_symbols() -> list[str]:
    """One printable character per byte value, indexed by byte (GPT-2/CLIP's reversible byte mapping).

    Bytes that are already printable, non-space Latin-1 characters stand for themselves; the other 68
    bytes are shifted to code points 256.. in increasing byte order, so no symbol is whitespace or control.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def _vocab_order_bytes() -> list[int]:
    """Byte values in the order CLIP's vocabulary lists their symbols: printable first, then shifted."""
    symbols = byte_symbols()
    return sorted(range(256), key=lambda b: (ord(symbols[b]) >= 256, ord(symbols[b])))


def clean_text(text: str) -> str:
    """CLIP's text cleaning, with our stdlib subset of ftfy (see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    text = _COMPAT_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _SINGLE_QUOTES.sub("'", text)
    text = _DOUBLE_QUOTES.sub('"', text)
    text = _CONTROL_CHARS.sub("", text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _is_letter(ch: str) -> bool:
    return ch.isalpha()  # exactly the Unicode categories Lu, Ll, Lt, Lm, Lo, i.e. \p{L}


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch).startswith("N")  # \p{N}


def split_words(text: str) -> list[str]:
    """Pre-tokenise cleaned text exactly as CLIP's alternation pattern would (first matching branch wins)."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        special = next((s for s in _SPECIALS if text.startswith(s, i)), None)
        if special is not None:
            words.append(special)
            i += len(special)
            continue
        if ch == "'":
            contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            if contraction is not None:
                words.append(contraction)
                i += len(contraction)
                continue
        if _is_letter(ch):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
        elif _is_number(ch):
            j = i + 1
        elif ch.isspace():
            i += 1
            continue
        else:
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        words.append(text[i:j])
        i = j
    return words


class ClipTokenizer:
    """Text -> CLIP token ids. `encode` gives the bare ids; calling it gives padded model input."""

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = 32) -> None:
        if context_length < 2:
            raise ValueError("context_length must hold at least the start and end tokens")
        self.context_length = context_length
        merges = self._read_merges(Path(vocab_path) if vocab_path is not None else DEFAULT_VOCAB_PATH)
        self._byte_symbol = byte_symbols()
        self._symbol_byte = {s: b for b, s in enumerate(self._byte_symbol)}
        base = [self._byte_symbol[b] for b in _vocab_order_bytes()]
        vocab = base + [s + END_OF_WORD for s in base] + ["".join(pair) for pair in merges] + list(_SPECIALS)
        self._ids = {token: i for i, token in enumerate(vocab)}
        if len(self._ids) != len(vocab):
            raise TokenizerError("BPE vocabulary has duplicate entries")
        self._tokens = vocab
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_token_id = self._ids[START_OF_TEXT]
        self.eot_token_id = self._ids[END_OF_TEXT]
        self.pad_token_id = 0
        self._bpe_cached = lru_cache(maxsize=65536)(self._bpe)

    @staticmethod
    def _read_merges(path: Path) -> list[tuple[str, str]]:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines = handle.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"cannot read BPE vocabulary {path}: {exc}") from exc
        rules = lines[1 : NUM_MERGES + 1]  # line 0 is a version header
        merges = [tuple(line.split()) for line in rules]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path} is not CLIP's BPE vocabulary ({NUM_MERGES} merge rules expected)")
        return merges  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Apply merge rules, lowest rank first, to one pre-tokenised word in byte symbols."""
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda pair: self._ranks.get(pair, NUM_MERGES))
            if best not in self._ranks:
                break
            first, second = best
            merged: list[str] = []
            k = 0
            while k < len(parts):
                if k + 1 < len(parts) and parts[k] == first and parts[k + 1] == second:
                    merged.append(first + second)
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        ids: list[int] = []
        for word in split_words(clean_text(text)):
            if word in _SPECIALS:
                ids.append(self._ids[word])
                continue
            symbols = "".join(self._byte_symbol[b] for b in word.encode("utf-8"))
            ids.extend(self._ids[token] for token in self._bpe_cached(symbols))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of `encode` up to cleaning; start/end/padding ids are dropped."""
        skip = {self.sot_token_id, self.eot_token_id, self.pad_token_id}
        raw = bytearray()
        for i in ids:
            if i in skip:
                continue
            token = self._tokens[i]
            end_of_word = token.endswith(END_OF_WORD)
            raw.extend(self._symbol_byte[ch] for ch in (token[: -len(END_OF_WORD)] if end_of_word else token))
            if end_of_word:
                raw.extend(b" ")
        return raw.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        """`(N, L)` ids: start token, text ids, end token, zero padding.

        Longer texts are cut to L tokens and the last kept position is overwritten with the end token,
        so pooling at the end token still works (CLIP's truncation rule).
        """
        length = self.context_length if context_length is None else context_length
        if length < 2:
            raise ValueError("context_length must hold at least the start and end tokens")
        batch = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(batch), length, dtype=torch.long)
        for row, text in enumerate(batch):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

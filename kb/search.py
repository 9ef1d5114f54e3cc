"""Hybrid retrieval over a bundle: dense (FAISS) + lexical (FTS5), fused by rank, one card per article.

Lexical matching only helps where query and passage share a language, so the lexical leg is gated to
passages in the query's detected language and fused with reciprocal-rank fusion (weights configurable);
the dense leg alone carries cross-lingual queries. Results are translation groups: each card shows the
version in the query's language when one exists, else the original with ``lang_fallback``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import html
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import regex

from .ann import EXACT_LIMIT
from .domain import Probe, ProbeError, fit_domain_probe, stored_probe
from .embedder import Encoder
from .entities import find_tracking
from .ethiopic import to_ethiopic
from .index import Bundle, BundleError, sentence_starts
from .langs import ROMANIZED_WORDS, WORD_RE, LangGuess, detect, romanized_vocabulary
from .lexical import HIGHLIGHT_SKIP, STOPWORDS, matching_spans, query_words, tokenize

MODES = ("dense", "lexical", "hybrid")
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
log = logging.getLogger(__name__)


CONFIDENCE_FEATURES = ("z", "gz", "margin", "m3", "qspread", "domain")  # weighed on the first card; "gap" per card
OOS_FEATURES = ("margin", "m3", "domain")  # need out-of-scope examples


@dataclass
class Calibration:
    """Logistic map from a card's features to a confidence in [0, 1]. Below 0.5 a card is under the relevance
    floor; a first card under it means no confident answer.

    Features (Searcher._card_confidence): z, how far the card's best passage stands out among all passages;
    gz, how far its group's semantic score stands out among the groups; margin, how much closer the query is
    to the articles' nearest question than to the nearest out-of-scope example, and m3 the same over the
    three nearest of each (one lucky neighbour decides less); qspread, how far the nearest question stands
    out from the fifth nearest (with margin and m3 it says whether the closeness comes from one question
    or from several); domain, the logit of a linear model of the query vector fitted to tell the articles'
    questions from the out-of-scope examples (kb.domain, fitted by `kb build`: all of them weigh in, where
    margin and m3 hear only the nearest few); gap, how far (in gz units) the card's group is below the first
    card's. `kb eval --calibrate` fits ``weights`` on the first cards (gap is 0 there, so the first card alone
    decides whether there is a confident answer), then ``gap_weight`` on every card of the answerable queries
    (relevant or not), so the cards below the first say how likely each is an answer too.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"z": 3.0})
    bias: float = -9.0
    # used when a feature of ``weights`` is missing (a knowledge base without out-of-scope examples)
    fallback_weights: dict[str, float] = field(default_factory=lambda: {"z": 3.0})
    fallback_bias: float = -9.0
    gap_weight: float = 0.0
    fallback_gap_weight: float = 0.0

    def confidence(self, features: dict[str, float]) -> float:
        w, b, v = (self.weights, self.bias, self.gap_weight) if all(k in features for k in self.weights) else \
            (self.fallback_weights, self.fallback_bias, self.fallback_gap_weight)
        x = b + sum(c * features.get(k, 0.0) for k, c in w.items()) + v * features.get("gap", 0.0)
        return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())

            def weights(d: dict) -> dict[str, float]:
                return {str(k): float(v) for k, v in d.items() if k in CONFIDENCE_FEATURES}

            fb = data.get("fallback", {})
            return cls(weights(data["weights"]), float(data["bias"]), weights(fb.get("weights", {"z": 3.0})),
                       float(fb.get("bias", -9.0)), float(data.get("gap_weight", 0.0)),
                       float(fb.get("gap_weight", 0.0)))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return cls()


@dataclass
class SearchConfig:
    rrf_k: int = 60
    dense_weight: float = 1.0
    # Lexical weight per query language, measured with `kb eval` (labelled set, StackFAQ, FLORES): BM25
    # helps English at 0.1 (0.2+ starts to hurt StackFAQ). For ml/bn/ta/hi it pulls translated-but-wrong
    # articles above English-only answers at every weight tried (0.02-1.0). Amharic is the close call: BM25
    # alone (0.616 MRR@10) beats dense (0.590) and a weight of 3.0 without the language gate reaches 0.625,
    # but it halves cross-lingual MRR (0.47 -> 0.33) and costs FLORES amh recall@1 (0.964 -> 0.955), so it
    # stays off until there is a fusion that keeps both.
    lexical_weights: dict[str, float] = field(default_factory=lambda: {"en": 0.1})
    default_lexical_weight: float = 0.0
    # BM25 over the editor-written questions in the query's language (every article has them, so unlike
    # passages this does not favour translated articles). `kb eval --question-lexical-weights` (labelled
    # hybrid MRR@10 at 0 / 0.1 / 0.3): am .737/.770/.787, en .945/.943/.961, ml .898/.915/.904,
    # hi .843/.853/.848, bn .882/.870/.836, ta .947/.926/.859 -- so bn and ta stay off.
    question_lexical_weights: dict[str, float] = field(
        default_factory=lambda: {"en": 0.3, "am": 0.3, "ml": 0.1, "hi": 0.1})
    default_question_lexical_weight: float = 0.0
    # Questions are short and BM25's IDF counts every language's questions, so one common word of the query's
    # language looks rare ("can I ship a cat": "ship" is in 16% of the English questions, a twentieth of
    # all): every question with it ranked first in that leg, above the article whose passages name the cat.
    # A word in at least this share of the questions searched is common; where the query has a word that is
    # neither common nor a function word (kb.stopwords), a question counts as a hit only if it has one of those.
    question_lexical_common: float = 0.1
    # "language": BM25 only over passages in the query's detected language. "script" (evaluation only):
    # every passage; tokens then only match within a script, plus Latin codes and names across scripts.
    lexical_gate: str = "language"
    candidates: int = 200
    exact_limit: int = EXACT_LIMIT  # above this many passages the vector store proposes dense candidates
    # passages the ANN index proposes for exact scoring above exact_limit (by passage and by heading vector)
    ann_candidates: int = 800
    # share of the cosine with the passage embedded as a query (`query: ` on both sides) next to the cosine
    # with its `passage: ` vector: the two embeddings of one text err differently, so their mean ranks better.
    # Chosen on FLORES-200 dev rows of languages not reported (som/tir/amh, recall@1 q:/p: .897, q:/q: .902,
    # 0.25 .942, 0.5 .955, 0.65 .955, 0.75 .953), confirmed on Tatoeba and XQuAD (README, commit message).
    query_style_weight: float = 0.5
    heading_weight: float = 0.35  # share of the title/heading cosine in a passage's dense score
    # weight of the best editor-written question (front matter `questions`, matched query-to-query) next to
    # the best passage in a group's semantic score; both are z-scores. `kb eval` on the labelled set:
    # 0 -> 0.785 overall dense MRR@10, 1.0 -> 0.880 (score sum; as a separate RRF leg only 0.845)
    question_weight: float = 1.0
    # per query language (issue 14). Chosen on the labelled set, authors' labels, hybrid MRR@10 at question_weight
    # 1.0 / 1.3 (before the question BM25 leg's function-word filter): am .8175/.8309, hi .8991/.9167,
    # bn .8847/.8878, ta .9672/.9506; confirmed on tests/data/queries_heldout_xling.jsonl, am .8475/.8500.
    # After that filter (main 7077070) hi and bn at 1.3 fell below 1.0 (.9200 < .9232, .8901 < .8955), so only
    # am keeps it: labelled am .8498 -> .8617, held-out am .8850 -> .8875 (both with romanized_amharic on)
    question_weights: dict[str, float] = field(default_factory=lambda: {"am": 1.3})
    max_results: int = 50
    relevance_floor: float = 0.5  # a card's confidence from which it counts (and is shown) as an answer
    stale_days: int = 365
    calibration: Calibration = field(default_factory=Calibration.load)
    snippet_words: int = 45
    # A pasted tracking number means nothing to the model (its digits pull towards HS codes, EORI numbers and
    # invoices). What the model reads instead, per kb.entities.TRACKING format: where the number stands alone
    # (at most ``identifier_words`` other words), the question a customer pasting it asks; inside a longer
    # question, the name of the thing, so the rest of the question still decides.
    identifier_questions: dict[str, str] = field(default_factory=lambda: {
        "swiftparcel": "track my parcel", "s10": "track my parcel", "ups": "another courier's tracking number",
        "mawb": "master air waybill number"})
    identifier_names: dict[str, str] = field(default_factory=lambda: {
        "swiftparcel": "tracking number", "s10": "tracking number", "ups": "another courier's tracking number",
        "mawb": "master air waybill number"})
    identifier_words: int = 2
    # romanized Amharic ("kasa lemeteyek sint ken alegn"): the model reads it in Ethiopic letters
    # (kb.ethiopic), BM25 reads both forms. Labelled set, authors' labels, am MRR@10 .8290 -> .8498; held-out
    # am .8725 -> .8850 (chosen before on the labelled set: the Ethiopic vector alone, .8375, against a 50/50
    # mix of both vectors, .8383 there but .8421 < .8475 on the held-out set)
    romanized_amharic: bool = True


@dataclass
class Filters:
    lang: str | None = None
    topics: list[str] | None = None
    countries: list[str] | None = None
    audience: str = "public"  # "public" sees public only; "internal" sees everything
    internal_only: bool = False  # agent assist looks for the best procedure separately
    today: dt.date | None = None
    passage_mask: np.ndarray | None = None  # extra restriction (evaluation pools)


def answer_language(guess: LangGuess, f: Filters) -> str | None:
    """The language the answers are wanted in; a card shown in another one is a ``lang_fallback``.

    The ``lang`` filter when given (only that language is eligible, so nothing is a fallback), else the
    detected query language when detection is sure (romanized Tamil wants Tamil). None when detection is
    unsure or found no language: a card is then never called a fallback, and the analytics do not count the
    search as needing a translation. The interface language does not decide it: a Tamil-UI visitor who types
    English reads English.
    """
    if f.lang:
        return f.lang
    return guess.lang if guess.certain and guess.lang != "und" else None


DIGIT_GROUPS = regex.compile(r"(?<![\d\p{L}])\d{3,4}(?: \d{3,4}){2,3}(?![\d\p{L}])")
CODE_TOKEN = regex.compile(r"(?<![\p{L}\d])(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z\d]+(?![\p{L}\d])")


def normalise_codes(text: str) -> str:
    """Numbers as the recognisers expect them: a waybill typed in groups ("4821 0937 5516", as labels print
    it) joined when the digits make 10 or 12, and letter-and-digit codes upper-cased ("cp203145923et")."""
    def join(m: regex.Match) -> str:
        digits = m.group(0).replace(" ", "")
        return digits if len(digits) in (10, 12) else m.group(0)

    return CODE_TOKEN.sub(lambda m: m.group(0).upper(), DIGIT_GROUPS.sub(join, text))


def tracking_numbers(text: str) -> list[dict]:
    """Tracking numbers in ``text`` (normalised first) as {"value", "format"}, by kb.entities' recognisers."""
    return find_tracking(normalise_codes(text))


def _rank_groups(order: list[int], passage_group: np.ndarray) -> dict[int, int]:
    """Rank (0-based) of each group by its best passage in an ordered passage list."""
    ranks: dict[int, int] = {}
    for pi in order:
        g = int(passage_group[pi])
        if g not in ranks:
            ranks[g] = len(ranks)
    return ranks


class Searcher:
    """Everything search needs from one bundle, precomputed once per load."""

    def __init__(self, bundle: Bundle, encoder: Encoder, config: SearchConfig | None = None):
        self.bundle = bundle
        self.encoder = encoder
        self.config = config or SearchConfig()
        self.passages = bundle.passages
        self.articles = bundle.articles
        self.article_index = {(a["id"], a["lang"]): i for i, a in enumerate(self.articles)}
        arts = self.articles
        self.a_public = np.array([a["audience"] == "public" for a in arts], dtype=bool)
        self.a_lang = np.array([a["lang"] for a in arts], dtype=object)
        self.a_expires = np.array([dt.date.fromisoformat(a["expires"]).toordinal() if a.get("expires")
                                   else dt.date.max.toordinal() for a in arts], dtype=np.int64)
        self.a_effective = np.array([dt.date.fromisoformat(a["effective"]).toordinal() if a.get("effective")
                                     else 0 for a in arts], dtype=np.int64)
        self.a_topics = [set(a["topics"]) for a in arts]
        self.a_countries = [set(a["countries"]) for a in arts]
        groups = sorted({a["group"] for a in self.articles})
        self.group_ids = groups
        gidx = {g: i for i, g in enumerate(groups)}
        self.group_versions: dict[int, dict[str, int]] = {}
        for i, a in enumerate(self.articles):
            self.group_versions.setdefault(gidx[a["group"]], {})[a["lang"]] = i
        n = len(self.passages)
        self.p_article = np.array([self.article_index[(p["article_id"], p["lang"])] for p in self.passages] or [],
                                  dtype=np.int64)
        self.p_group = np.array([gidx[p["group"]] for p in self.passages] or [], dtype=np.int64)
        # passages of each article: a card's confidence reads two articles' rows, not a mask over every passage
        # (np.isin per card was ~4% of a search with 50 ranked cards)
        by_article = np.argsort(self.p_article, kind="stable")
        self.article_passages = np.split(by_article, np.cumsum(np.bincount(self.p_article, minlength=len(arts)))[:-1])
        self.p_lang = np.array([p.get("lex_lang") or p["lang"] for p in self.passages] or [], dtype=object)
        self.vectors = self._vectors(n)
        # article questions (row i of the bundle = FTS rowid i) and out-of-scope examples (group None)
        rows = bundle.questions
        qv = bundle.question_vectors if bundle.question_vectors is not None else np.zeros((0, encoder.dim))
        self.q_rowid = np.array([i for i, q in enumerate(rows) if q["group"] is not None], dtype=np.int64)
        self.q_pos = {int(r): i for i, r in enumerate(self.q_rowid)}
        self.q_vectors = qv[self.q_rowid].astype(np.float32) if len(self.q_rowid) else np.zeros((0, encoder.dim), np.float32)
        self.q_group = np.array([gidx[rows[i]["group"]] for i in self.q_rowid], dtype=np.int64)
        self.q_lang = np.array([rows[i]["lang"] for i in self.q_rowid], dtype=object)
        postings: dict[str, list[int]] = {}
        for pos, i in enumerate(self.q_rowid):
            for tok in set(tokenize(rows[i]["text"])):
                postings.setdefault(tok, []).append(pos)
        self.q_vocab = sorted(postings)  # questions' tokens, sorted for prefix look-ups
        self.q_postings = [np.array(postings[t], dtype=np.int64) for t in self.q_vocab]
        # romanized forms the editors wrote (Manglish, Tanglish...) teach language detection their words
        self.romanized_vocab = romanized_vocabulary(
            [(q["lang"], q["text"]) for q in rows if q["group"] is not None],
            [p["text"] for p in self.passages if p["lang"] == "en"])
        oos = [i for i, q in enumerate(rows) if q["group"] is None]
        self.oos_vectors = qv[oos].astype(np.float32) if oos else np.zeros((0, encoder.dim), np.float32)
        # words of the English articles (and English function words) stay in Latin letters when a romanized
        # Amharic query is written in Ethiopic: "parcel", "power bank", "address" are typed as loanwords
        self.latin_keep = frozenset(
            w.lower() for p in self.passages if p["lang"] == "en" for w in WORD_RE.findall(p["text"]) if len(w) >= 4
        ) - self.romanized_vocab.get("am", frozenset()) - ROMANIZED_WORDS["am"] | (STOPWORDS - {"be"})
        self.q_lang_members = {lang: self.q_lang == lang for lang in sorted(set(self.q_lang.tolist()))}
        self.domain = self._domain_probe()
        self.headings = bundle.headings if len(bundle.headings) == n else np.zeros_like(self.vectors)
        qs = bundle.query_style
        self.query_style = qs if qs is not None and len(qs) == n else None
        self.has_heading = np.linalg.norm(self.headings, axis=1) > 0 if n else np.zeros(0, dtype=bool)
        # a heading shared by many passages (one title over a whole document) says little about each of them
        keys = [(p["title"], tuple(p["heading_path"])) for p in self.passages]
        counts: dict[tuple, int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        self.heading_share = np.array([1.0 / counts[k] for k in keys] or [], dtype=np.float32)
        langs = np.array([p["lang"] for p in self.passages] or [], dtype=object)
        rng = np.random.default_rng(0)
        self.lang_samples = {}  # passages per language used to estimate the language's baseline similarity
        self.lang_members = {}  # passage mask per language, for centring
        for lang in sorted(set(langs.tolist())):
            self.lang_members[lang] = langs == lang
            idx = np.flatnonzero(self.lang_members[lang])
            self.lang_samples[lang] = idx if len(idx) <= 2000 else np.sort(rng.choice(idx, 2000, replace=False))
        sv = bundle.sentence_vectors
        self.sentence_vectors = sv if sv is not None else np.zeros((0, encoder.dim), np.float16)
        self.sentence_start = sentence_starts(self.passages)
        self._lock = threading.Lock()
        self._related: np.ndarray | None = None

    def _domain_probe(self) -> Probe | None:
        """The bundle's domain probe (kb.domain) as `kb build` stored it, so loading a bundle imports no
        scikit-learn. The one fallback, for a bundle built before builds stored it: fitted here, in process
        (scikit-learn then stays in this process, ~99 MB), with a warning to rebuild."""
        try:
            stored, probe = stored_probe(self.bundle.manifest, len(self.q_vectors), len(self.oos_vectors),
                                         self.encoder.dim)
        except ProbeError as e:
            raise BundleError(f"{self.bundle.path}: {e}; rebuild with `kb build`") from None
        if stored:
            return probe
        log.warning("bundle %s has no stored domain probe: fitting it in this process (loads scikit-learn); "
                    "rebuild with `kb build` to store it", self.bundle.name)
        return fit_domain_probe(self.q_vectors, self.oos_vectors)

    def detect(self, text: str) -> LangGuess:
        """Query language, with the romanized words of this knowledge base's questions."""
        return detect(text, self.romanized_vocab)

    def query_text(self, query: str, found: list[dict] | None = None, guess: LangGuess | None = None) -> str:
        """The text the model reads for ``query`` (see :meth:`query_texts`)."""
        return self.query_texts(query, found, guess)[0]

    def query_texts(self, query: str, found: list[dict] | None = None,
                    guess: LangGuess | None = None) -> tuple[str, str]:
        """(text the model reads, text BM25 reads) for ``query``.

        Both: tracking numbers replaced (:meth:`identifier_text`). Romanized Amharic is read by the model in
        Ethiopic letters, by BM25 in both (its romanized questions and its Ethiopic ones). Ethiopic text reaches
        the model as typed: folding its homophone letters (as BM25 does) moved the labelled set's am only
        .8175 -> .8232 and the held-out am not at all, and cost FLORES-200 recall@1 amh .9950 -> .9925 and
        tir .9100 -> .8775 (Tigrinya tells those letters apart). ``found``: tracking_numbers(query);
        ``guess``: self.detect(query), when the caller has them already."""
        text = self.identifier_text(query, found)
        guess = guess or self.detect(query)
        ethiopic = None
        if self.config.romanized_amharic and guess.romanized and guess.lang == "am":
            ethiopic = to_ethiopic(text, self.latin_keep)
            ethiopic = ethiopic if ethiopic != text else None
        return ethiopic or text, f"{text} {ethiopic}" if ethiopic else text

    def identifier_text(self, query: str, found: list[dict] | None = None) -> str:
        """``query`` with its tracking numbers replaced (SearchConfig.identifier_questions/_names)."""
        found = tracking_numbers(query) if found is None else found
        if not found:
            return query
        query = normalise_codes(query)
        rest = query
        for t in found:
            rest = rest.replace(t["value"], " ")
        c = self.config
        if len(rest.split()) <= c.identifier_words:
            intents = dict.fromkeys(c.identifier_questions.get(t["format"], "") for t in found)
            return " ".join([*intents, *rest.split()]).strip() or query
        out = query
        for t in found:
            out = out.replace(t["value"], c.identifier_names.get(t["format"], t["value"]))
        return out

    def _vectors(self, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.ascontiguousarray(self.bundle.store.vectors()[:n], dtype=np.float32)

    # ------------------------------------------------------------------ filters

    def eligible(self, f: Filters) -> np.ndarray:
        """Boolean mask over articles (per-article fields are parsed once, in __init__)."""
        today = (f.today or dt.date.today()).toordinal()
        mask = (self.a_expires >= today) & (self.a_effective <= today)
        if f.internal_only:
            mask &= ~self.a_public
        elif f.audience == "public":
            mask &= self.a_public
        if f.lang:
            mask &= self.a_lang == f.lang
        if f.topics:
            wanted = set(f.topics)
            mask &= np.array([bool(wanted & t) for t in self.a_topics], dtype=bool)
        if f.countries:
            wanted = set(f.countries)
            mask &= np.array([("*" in c) or bool(wanted & c) for c in self.a_countries], dtype=bool)
        return mask

    # ------------------------------------------------------------------ search

    def search(self, query: str, filters: Filters | None = None, limit: int = 10, offset: int = 0,
               mode: str = "hybrid", guess: LangGuess | None = None, qvec: np.ndarray | None = None,
               snippets: bool = True, features: bool = False, floor: bool = False) -> dict:
        """Ranked cards for ``query``; ``qvec``, when given, is the model's vector of ``query_text(query)``.

        ``total`` counts the cards above the relevance floor (confidence >= ``relevance_floor``), the ones a
        page shows as answers; ``floor``: return only those (the API), else every ranked card (evaluation,
        agent assist, which rank and merge them).
        """
        t0 = time.perf_counter()
        f = filters or Filters()
        guess = guess or self.detect(query)
        numbers = tracking_numbers(query)
        text, lex_text = self.query_texts(query, numbers, guess)  # what the model and BM25 read
        art_mask = self.eligible(f)
        p_mask = art_mask[self.p_article] if len(self.passages) else np.zeros(0, dtype=bool)
        if f.passage_mask is not None:
            p_mask = p_mask & f.passage_mask
        dense_scores = np.full(len(self.passages), -1.0, dtype=np.float32)
        zscores = np.zeros(len(self.passages), dtype=np.float32)
        dense_rank: dict[int, int] = {}
        group_sem = np.full(len(self.group_ids), -np.inf)
        qsims = np.zeros(0, dtype=np.float32)
        lex_rank: dict[int, int] = {}
        qlex_rank: dict[int, int] = {}
        lex_hits: set[int] = set()
        if p_mask.any():
            # which legs run, decided first, so a backend across a network answers them in one round trip
            # a romanized query can only match Latin-script text: English passages and questions (it shares
            # loanwords with them: parcel, customs, perfume) and its own language's romanized questions; the
            # weights stay those measured for its language
            lex_lang = "en" if guess.romanized else guess.lang
            lex_weight = 1.0 if mode == "lexical" else self.config.lexical_weights.get(
                guess.lang, self.config.default_lexical_weight) if guess.certain else 0.0
            lex_req = qlex_req = telling = None
            if mode in ("lexical", "hybrid") and lex_weight > 0:
                allowed = p_mask.copy()
                if mode == "hybrid" and self.config.lexical_gate == "language":
                    # gate: lexical only where query and passage share a language
                    allowed &= self.p_lang == lex_lang
                if allowed.any():
                    lex_req = ("fts", self.config.candidates, set(np.flatnonzero(allowed).tolist()))
            qlex_weight = 1.0 if mode == "lexical" else self.config.question_lexical_weights.get(
                guess.lang, self.config.default_question_lexical_weight) if guess.certain else 0.0
            if mode in ("lexical", "hybrid") and qlex_weight > 0 and len(self.q_group):
                open_groups = np.zeros(len(self.group_ids), dtype=bool)
                open_groups[self.p_group[p_mask]] = True
                allowed = open_groups[self.q_group]
                if mode == "hybrid":
                    allowed &= (self.q_lang == guess.lang) | (self.q_lang == lex_lang)
                if allowed.any():
                    qlex_req = ("questions", self.config.candidates, set(self.q_rowid[allowed].tolist()))
                    telling = self._telling_questions(lex_text, allowed)
            dense = mode in ("dense", "hybrid")
            if dense and qvec is None:
                qvec = self.encoder.encode_query(text)
            k = self.config.ann_candidates if dense and len(self.vectors) > self.config.exact_limit else 0
            ann_ids, (hits, qhits) = self._first_stage(lex_text, qvec, k, [lex_req, qlex_req])
            if dense:
                dense_scores, _centred, zscores = self._dense(qvec, ann_ids)
                qsims = self.q_vectors @ qvec  # once: the semantic score and the confidence both use it
                group_sem = self._semantic(qsims, zscores, p_mask, guess.lang)
                open_idx = np.flatnonzero(np.isfinite(group_sem))
                top = open_idx[np.argsort(-group_sem[open_idx], kind="stable")[: self.config.candidates]]
                dense_rank = {int(g): r for r, g in enumerate(top)}
            if lex_req is not None:
                lex_hits = {pi for pi, _s in hits}
                lex_rank = _rank_groups([pi for pi, _s in hits], self.p_group)
            if qlex_req is not None:
                if telling is not None:
                    qhits = [(qi, sc) for qi, sc in qhits if telling[self.q_pos[qi]]]
                qlex_rank = _rank_groups([self.q_pos[qi] for qi, _s in qhits], self.q_group)
        else:
            lex_weight = qlex_weight = 0.0
        c = self.config
        fused: dict[int, float] = {}
        for g, r in dense_rank.items():
            fused[g] = fused.get(g, 0.0) + c.dense_weight / (c.rrf_k + r + 1)
        for g, r in lex_rank.items():
            fused[g] = fused.get(g, 0.0) + lex_weight / (c.rrf_k + r + 1)
        for g, r in qlex_rank.items():
            fused[g] = fused.get(g, 0.0) + qlex_weight / (c.rrf_k + r + 1)
        ranked = sorted(fused, key=lambda g: (-fused[g], g))[: c.max_results]
        qfeat = self._query_features(qvec, qsims, group_sem) if mode != "lexical" and qvec is not None else None
        if qfeat is not None and ranked and np.isfinite(group_sem[ranked[0]]):
            qfeat["g_top"] = float(group_sem[ranked[0]])  # gap: below the first card (0 there)
        scored: dict[int, tuple[float, dict]] = {}
        for g in ranked:  # every ranked card's confidence: `total` counts those above the floor
            picked = self._version(g, guess, art_mask)
            if picked is not None:
                scored[g] = self._card_confidence(g, *picked, p_mask, zscores, fused[g], mode, qfeat, group_sem)
        relevant = [g for g in ranked if g in scored and scored[g][0] >= c.relevance_floor]
        shown = relevant if floor else [g for g in ranked if g in scored]
        results = []
        for g in shown[offset : offset + limit]:
            # a cross-lingual card's snippet is its passage's sentence closest to the query (vectors from the build)
            r = self._card(g, guess, art_mask, p_mask, dense_scores, zscores, lex_hits, query, fused[g], f, mode,
                           snippets, qvec if snippets else None, qfeat, group_sem, scored[g])
            if r:
                if not features:
                    r.pop("features")
                results.append(r)
        # the best answer overall (the first ranked card), whether or not it is on this page
        top_conf = scored[ranked[0]][0] if ranked and ranked[0] in scored else 0.0
        return {
            "query": query,
            "detected_lang": guess.lang,
            "answer_lang": answer_language(guess, f),
            "script": guess.script,
            "romanized": guess.romanized,
            "tracking_numbers": numbers,
            "mode": mode,
            "total": len(relevant),
            "offset": offset,
            "limit": limit,
            "results": results,
            "top_confidence": round(top_conf, 4),
            "no_confident_answer": top_conf < 0.5,
            "bundle": self.bundle.name,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        }

    def _question_matches(self, form: str) -> np.ndarray:
        """Positions of the questions an FTS5 form of kb.lexical.query_words matches (`"x"*`: a token
        starting with x, `"x"`: the token x)."""
        prefix = form.endswith("*")
        word = form[1:-2] if prefix else form[1:-1]
        lo = bisect.bisect_left(self.q_vocab, word)
        hi = bisect.bisect_left(self.q_vocab, word + "\U0010ffff") if prefix else \
            lo + int(lo < len(self.q_vocab) and self.q_vocab[lo] == word)
        return np.concatenate(self.q_postings[lo:hi]) if hi > lo else np.zeros(0, dtype=np.int64)

    def _telling_questions(self, text: str, allowed: np.ndarray) -> np.ndarray | None:
        """Mask of the questions with a word of ``text`` that is not common among the ``allowed`` ones (see
        SearchConfig.question_lexical_common); None where every word of the query is common."""
        n = max(int(allowed.sum()), 1)
        telling = np.zeros(len(allowed), dtype=bool)
        rare = False
        for forms in query_words(text, skip=HIGHLIGHT_SKIP):  # a function word (को, सकते) tells nothing apart
            has = np.zeros(len(allowed), dtype=bool)
            for form in forms:
                has[self._question_matches(form)] = True
            if (has & allowed).sum() / n < self.config.question_lexical_common:
                rare = True
                telling |= has
        return telling if rare else None

    def _first_stage(self, text: str, qvec: np.ndarray | None, k: int, lexical: list) -> tuple[np.ndarray | None, list]:
        """The ANN candidates (``k`` > 0) and the lexical legs' hits (a request per leg, None: not run), from
        the bundle's one-call first stage when it has one (Postgres: one statement), else one by one."""
        asked = [r for r in lexical if r is not None]
        if self.bundle.first_stage is not None and (k or asked):
            ids, got = self.bundle.first_stage(text, qvec, k, asked)
        else:
            ids = self.bundle.store.candidates(qvec, k) if k else None
            got = [self.bundle.lexical.search(text, limit=lim, rowids=rowids, table=t) for t, lim, rowids in asked]
        it = iter(got)
        return ids, [next(it) if r is not None else [] for r in lexical]

    def _dense(self, qvec: np.ndarray, ann_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(score, centred score, z) per passage.

        score: mean of the passage cosine and its title/heading cosine (passage cosine alone where there is
        no heading). centred: score minus the query's mean score over passages of the same language. e5
        rates any text in the query's own language a few points higher, so without centring a Malayalam
        question prefers an unrelated Malayalam article to the English one that answers it.
        """
        pool = None
        if len(self.vectors) > self.config.exact_limit:  # large KB: the ANN index proposes, exact scores decide
            ids = ann_ids if ann_ids is not None else self.bundle.store.candidates(qvec, self.config.ann_candidates)
            pool = np.union1d(ids, np.concatenate(list(self.lang_samples.values())))
        score = passage_scores(qvec, self.vectors, self.query_style, self.headings, self.has_heading,
                               self.config.heading_weight * self.heading_share, self.config.query_style_weight,
                               pool)
        centred = score.copy()
        spread = []
        for lang, idx in self.lang_samples.items():
            centred[self.lang_members[lang]] -= float(score[idx].mean())
            spread.append(centred[idx])
        # one spread for all languages: a per-language one inflates z in a language with few passages
        z = centred / max(float(np.concatenate(spread).std()) if spread else 1.0, 1e-6)
        return score, centred, z

    def _semantic(self, qsims: np.ndarray, zscores: np.ndarray, p_mask: np.ndarray,
                  lang: str | None = None) -> np.ndarray:
        """Semantic score per translation group (-inf where nothing is eligible).

        Best passage z plus ``question_weight`` (``question_weights`` for the query's ``lang``) x best
        editor-written question z (questions are z-scored per
        language; ``qsims``: the query's cosine with each question). A group without questions counts its
        passage z twice, so adding questions to some articles does not bury the others.
        """
        ng = len(self.group_ids)
        gp = np.full(ng, -np.inf)
        np.maximum.at(gp, self.p_group[p_mask], zscores[p_mask])
        w = self.config.question_weights.get(lang or "", self.config.question_weight)
        if not len(qsims) or w <= 0:
            return gp
        zq = np.empty_like(qsims)
        for members in self.q_lang_members.values():  # hundreds per language: a per-language spread is stable
            x = qsims[members]
            zq[members] = (x - float(x.mean())) / max(float(x.std()), 1e-6)
        allowed = np.isfinite(gp)[self.q_group]
        gq = np.full(ng, -np.inf)
        np.maximum.at(gq, self.q_group[allowed], zq[allowed])
        gq = np.where(np.isfinite(gq), gq, gp)
        return gp + w * gq

    def _query_features(self, qvec: np.ndarray, qsims: np.ndarray, group_sem: np.ndarray) -> dict[str, float]:
        """Per-query parts of the confidence features (see Calibration)."""
        live = group_sem[np.isfinite(group_sem)]
        mu, sd = (float(live.mean()), max(float(live.std()), 1e-6)) if len(live) > 1 else (0.0, 1.0)
        out: dict = {"g_mu": mu, "g_sd": sd, "g_top": float(live.max()) if len(live) else 0.0}  # search() resets it
        if len(qsims) >= 5:
            near = np.sort(qsims)[::-1][:5]
            out["qspread"] = float(near[0] - near[4])
            if len(self.oos_vectors) >= 3:
                oos = np.sort(self.oos_vectors @ qvec)[::-1][:3]
                out["margin"] = float(near[0] - oos[0])
                out["m3"] = float(near[:3].mean() - oos.mean())
        if self.domain is not None:
            out["domain"] = float(qvec @ self.domain[0] + self.domain[1])
        return out

    def _version(self, g: int, guess: LangGuess, art_mask: np.ndarray) -> tuple[int, int | None] | None:
        """(article shown for group ``g``: the query's language, else the source, else English; the source)."""
        versions = {lang: ai for lang, ai in self.group_versions[g].items() if art_mask[ai]}
        if not versions:
            return None
        group_id = self.group_ids[g]
        source = next((ai for ai in versions.values() if self.articles[ai]["id"] == group_id), None)
        if guess.lang in versions:
            ai = versions[guess.lang]
        elif source is not None:
            ai = source
        else:
            ai = versions.get("en", next(iter(versions.values())))
        return ai, source

    def _card_confidence(self, g: int, ai: int, source: int | None, p_mask: np.ndarray, zscores: np.ndarray,
                         fused: float, mode: str, qfeat: dict | None,
                         group_sem: np.ndarray | None) -> tuple[float, dict[str, float]]:
        """(confidence, features) of group ``g`` shown as article ``ai`` (see Calibration)."""
        # confidence from the version shown and its source only: a translation in a third language can
        # stand out by chance, and the card does not show it
        rows = self.article_passages[ai] if source is None or source == ai else \
            np.concatenate([self.article_passages[ai], self.article_passages[source]])
        rows = rows[p_mask[rows]]
        best_z = float(zscores[rows].max()) if len(rows) else 0.0
        feats = {"z": best_z}
        if qfeat is not None and group_sem is not None and np.isfinite(group_sem[g]):
            feats["gz"] = (float(group_sem[g]) - qfeat["g_mu"]) / qfeat["g_sd"]
            feats["gap"] = (float(group_sem[g]) - qfeat["g_top"]) / qfeat["g_sd"]
            feats.update({k: qfeat[k] for k in ("margin", "m3", "qspread", "domain") if k in qfeat})
        conf = self.config.calibration.confidence(feats) if mode != "lexical" else min(1.0, fused * 30)
        return conf, feats

    def _card(self, g: int, guess: LangGuess, art_mask: np.ndarray, p_mask: np.ndarray, dense: np.ndarray,
              zscores: np.ndarray, lex_hits: set[int], query: str, fused: float, f: Filters, mode: str,
              snippets: bool = True, sentence_vec: np.ndarray | None = None, qfeat: dict | None = None,
              group_sem: np.ndarray | None = None, scored: tuple[float, dict] | None = None) -> dict | None:
        picked = self._version(g, guess, art_mask)
        if picked is None:
            return None
        ai, source = picked
        group_id = self.group_ids[g]
        art = self.articles[ai]
        sel = np.flatnonzero((self.p_article == ai) & p_mask)
        if len(sel) == 0:
            return None
        group_sel = p_mask & (self.p_group == g)
        best_cos = float(dense[group_sel].max()) if group_sel.any() else -1.0
        if mode == "lexical":
            lex_in = [pi for pi in sel if pi in lex_hits]
            pi = int(lex_in[0]) if lex_in else int(sel[0])
        else:
            pi = int(sel[np.argmax(dense[sel])])
        passage = self.passages[pi]
        snippet, spans = self._snippet(pi, query, guess, sentence_vec) if snippets else (passage["text"][:300], [])
        today = f.today or dt.date.today()
        updated = dt.date.fromisoformat(art["updated"])
        conf, feats = scored or self._card_confidence(g, ai, source, p_mask, zscores, fused, mode, qfeat, group_sem)
        best_z = feats["z"]
        want = answer_language(guess, f)
        return {
            "article_id": art["id"],
            "group": group_id,
            "lang": art["lang"],
            "title": art["title"],
            "url": f"/articles/{art['id']}?lang={art['lang']}",
            "topics": art["topics"],
            "countries": art["countries"],
            "audience": art["audience"],
            "updated": art["updated"],
            "available_langs": sorted(self.group_versions[g]) if f.audience != "public" else
            sorted(lang for lang, i in self.group_versions[g].items() if self.articles[i]["audience"] == "public"),
            "passage": {"id": passage["id"], "heading": " › ".join(passage["heading_path"]),
                        "anchor": passage["anchor"], "text": passage["text"]},
            "snippet": snippet,
            "snippet_html": _highlight_html(snippet, spans),
            "highlights": spans,
            "score": round(fused, 6),
            "dense_score": round(best_cos, 4),
            "confidence": round(conf, 4),
            "z_score": round(best_z, 3),
            "features": {k: round(v, 4) for k, v in feats.items()},
            "lang_fallback": want is not None and art["lang"] != want,
            "stale": (today - updated).days > self.config.stale_days,
        }

    def source_title(self, group_id: str) -> str:
        """Title of a translation group's source article (its English original for translated groups)."""
        try:
            versions = self.group_versions[self.group_ids.index(group_id)]
        except ValueError:
            return group_id
        source = next((i for i in versions.values() if self.articles[i]["id"] == group_id), None)
        return self.articles[source if source is not None else next(iter(versions.values()))]["title"]

    # ------------------------------------------------------------------ related articles

    def related_matrix(self) -> np.ndarray:
        """Mean passage vector per article, normalised (computed once per bundle)."""
        with self._lock:
            if self._related is None:
                m = np.zeros((len(self.articles), self.encoder.dim), np.float32)
                np.add.at(m, self.p_article, self.vectors)
                self._related = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
            return self._related

    def related(self, ai: int, audience: str = "public", limit: int = 5) -> list[dict]:
        """Nearest other articles (one per translation group), in this article's language where possible."""
        m = self.related_matrix()
        sims = m @ m[ai]
        me = self.articles[ai]
        gidx = {g: i for i, g in enumerate(self.group_ids)}
        seen, out = {me["group"]}, []
        for j in np.argsort(-sims):
            a = self.articles[int(j)]
            if a["group"] in seen or (audience == "public" and a["audience"] != "public"):
                continue
            seen.add(a["group"])
            pick = self.group_versions[gidx[a["group"]]].get(me["lang"], int(j))
            if audience == "public" and self.articles[pick]["audience"] != "public":
                pick = int(j)
            b = self.articles[pick]
            out.append({"id": b["id"], "lang": b["lang"], "title": b["title"],
                        "url": f"/articles/{b['id']}?lang={b['lang']}", "score": round(float(sims[j]), 4)})
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ snippets

    def _snippet(self, pi: int, query: str, guess: LangGuess,
                 qvec: np.ndarray | None) -> tuple[str, list[list[int]]]:
        passage = self.passages[pi]
        text = passage["text"]
        spans = matching_spans(text, query) if passage["lang"] == guess.lang and not guess.romanized else []
        if spans:
            return _window(text, spans, self.config.snippet_words)
        if qvec is None:
            return _opening(passage["text"], self.config.snippet_words), []
        return self._best_sentence(pi, qvec), []

    def _best_sentence(self, pi: int, qv: np.ndarray) -> str:
        """For a cross-lingual hit: the passage sentence closest to the query, by the sentence vectors `kb build`
        stored (no encoding at search time). A passage stored without them shows its opening."""
        passage = self.passages[pi]
        a, b = int(self.sentence_start[pi]), int(self.sentence_start[pi + 1])
        if a == b:
            return _opening(passage["text"], self.config.snippet_words)
        best = passage["sentences"][int(np.argmax(self.sentence_vectors[a:b].astype(np.float32) @ qv))]
        return best if len(best) <= 400 else best[:400].rsplit(" ", 1)[0] + " …"


def passage_scores(qvec: np.ndarray, vectors: np.ndarray, query_style: np.ndarray | None, headings: np.ndarray,
                   has_heading: np.ndarray, heading_w: np.ndarray, query_style_w: float,
                   pool: np.ndarray | None = None) -> np.ndarray:
    """Dense score per passage (pure numpy over the bundle's vectors, so any vector store can reproduce it).

    The passage cosine is the mean of the query's cosine with the `passage: ` vector and with the query-style
    (`query: `) vector, weighted ``1 - query_style_w`` / ``query_style_w``; where the passage has a title or
    heading, its cosine takes the share ``heading_w`` (per passage). ``pool``: score only these rows (-1
    elsewhere), for large knowledge bases where an ANN index proposes the candidates.
    """
    rows = slice(None) if pool is None else pool
    cos = vectors[rows] @ qvec
    if query_style is not None and query_style_w > 0:
        cos = (1 - query_style_w) * cos + query_style_w * (query_style[rows] @ qvec)
    heads = headings[rows] @ qvec
    w = heading_w[rows]
    mixed = np.where(has_heading[rows], (1 - w) * cos + w * heads, cos).astype(np.float32)
    if pool is None:
        return mixed
    score = np.full(len(vectors), -1.0, dtype=np.float32)
    score[pool] = mixed
    return score


def _window(text: str, spans: list[tuple[int, int]], words: int) -> tuple[str, list[list[int]]]:
    """About ``words`` words around the first highlighted span; spans re-based to the window."""
    first = spans[0][0]
    start = text.rfind("\n", 0, first) + 1
    tokens = list(regex.finditer(r"\S+", text[start:]))
    before = [t for t in tokens if t.start() + start < first]
    lead = before[-8:] if len(before) > 8 else before
    s = start + (lead[0].start() if lead else 0)
    end_tokens = [t for t in tokens if t.start() + start >= s][:words]
    e = start + end_tokens[-1].end() if end_tokens else len(text)
    prefix = "… " if s > 0 else ""
    suffix = " …" if e < len(text) else ""
    snippet = prefix + text[s:e] + suffix
    shift = len(prefix) - s
    out = [[a + shift, b + shift] for a, b in spans if a >= s and b <= e]
    return snippet, out


def _opening(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def _highlight_html(text: str, spans: list[list[int]]) -> str:
    """Escaped text with <mark> around spans: safe to insert into a page."""
    parts, pos = [], 0
    for a, b in spans:
        if a < pos:
            continue
        parts.append(html.escape(text[pos:a]))
        parts.append("<mark>" + html.escape(text[a:b]) + "</mark>")
        pos = b
    parts.append(html.escape(text[pos:]))
    return "".join(parts)

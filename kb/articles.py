"""Article loading and validation (`kb check`).

Every problem is collected, never raised, so an editor sees all of them at once as ``path:line: message``.
Front matter is split with python-frontmatter and parsed with PyYAML's node API to keep line numbers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import frontmatter
import yaml

TOPICS = (
    "shipping-rules", "prohibited-items", "dangerous-goods", "packaging", "customs", "duties-taxes",
    "documentation", "tracking", "delivery", "returns", "claims", "billing", "account", "country-guides",
    "support-procedures",
)
AUDIENCES = ("public", "internal")
PRODUCT_LANGS = ("en", "ml", "bn", "ta", "am", "hi")
# ISO 639-1 codes (all 184); any of them is a valid `lang`.
ISO639_1 = frozenset("""aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv
cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig
ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn
mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk
sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za
zh zu""".split())
# ISO 3166-1 alpha-2 codes, plus EU for the European Union.
ISO3166 = frozenset("""AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS
IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO
MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA
RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT
TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW EU""".split())
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,79}$")
LINK_RE = re.compile(r"\]\(/articles/([^)#?\s]+)(?:[#?][^)\s]*)?\)")
FILE_RE = re.compile(r"^(?P<id>[^.]+)\.(?P<lang>[a-z]{2})\.md$")
MAX_BYTES = 1_000_000
MAX_YAML_DEPTH = 20
REQUIRED = ("id", "title", "lang", "topics", "countries", "audience", "updated")
OPTIONAL = ("translation_of", "effective", "expires", "questions")
MAX_QUESTION_CHARS = 200
OUT_OF_SCOPE_FILE = "out-of-scope.yaml"


@dataclass
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Article:
    id: str
    lang: str
    title: str
    topics: list[str]
    countries: list[str]
    audience: str
    updated: dt.date
    body: str
    path: str
    body_line: int = 1
    translation_of: str | None = None
    effective: dt.date | None = None
    expires: dt.date | None = None
    content_hash: str = ""
    links: list[tuple[str, int]] = field(default_factory=list)
    questions: dict[str, list[str]] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """Translation group: the source article's id."""
        return self.translation_of or self.id

    def meta(self) -> dict:
        return {
            "id": self.id, "lang": self.lang, "title": self.title, "topics": self.topics,
            "countries": self.countries, "audience": self.audience, "updated": self.updated.isoformat(),
            "translation_of": self.translation_of, "group": self.group,
            "effective": self.effective.isoformat() if self.effective else None,
            "expires": self.expires.isoformat() if self.expires else None,
            "path": self.path, "content_hash": self.content_hash,
        }


def _depth(node: yaml.Node, limit: int) -> int:
    stack = [(node, 1)]
    deepest = 0
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(n, yaml.SequenceNode):
            stack.extend((c, d + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((v, d + 1) for _k, v in n.value)
    return deepest


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def parse_file(path: Path, display: str) -> tuple[Article | None, list[Problem]]:
    """Parse and validate one article file on its own (cross-file rules live in `check_tree`)."""
    probs: list[Problem] = []

    def bad(line: int, msg: str) -> None:
        probs.append(Problem(display, line, msg))

    try:
        size = path.stat().st_size
    except OSError as e:
        bad(1, f"cannot read file: {e.strerror}")
        return None, probs
    if size > MAX_BYTES:
        bad(1, f"file too large: {size / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
        return None, probs
    raw = path.read_bytes()
    if b"\x00" in raw:
        bad(raw[: raw.index(b"\x00")].count(b"\n") + 1, "binary file (NUL byte): articles must be UTF-8 text")
        return None, probs
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad(raw[: e.start].count(b"\n") + 1, f"invalid UTF-8 at byte {e.start}: save the file as UTF-8")
        return None, probs
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        bad(1, "missing YAML front matter: the file must start with a '---' line")
        return None, probs
    try:
        fm_text, body = frontmatter.YAMLHandler().split(text)
    except ValueError:
        bad(1, "front matter is not closed: add a '---' line after it")
        return None, probs
    # file line of YAML line 0 and of the body's first line (the handler may trim surrounding newlines)
    fm_offset = text[: max(text.find(fm_text), 0)].count("\n") if fm_text else 1
    body_line = text[: text.rfind(body)].count("\n") + 1 if body else text.count("\n") + 1
    try:
        node = yaml.compose(fm_text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        line = (e.problem_mark.line if e.problem_mark else 0) + fm_offset + 1
        bad(line, f"bad YAML: {e.problem or e}")
        return None, probs
    except (yaml.YAMLError, RecursionError) as e:
        bad(2, f"bad YAML: {type(e).__name__}")
        return None, probs
    if node is None or not isinstance(node, yaml.MappingNode):
        bad(2, "front matter must be a YAML mapping of fields")
        return None, probs
    if _depth(node, MAX_YAML_DEPTH) > MAX_YAML_DEPTH:
        bad(2, f"front matter nested deeper than {MAX_YAML_DEPTH} levels")
        return None, probs
    try:
        meta = yaml.safe_load(fm_text)
    except (yaml.YAMLError, RecursionError) as e:
        bad(2, f"bad YAML: {e}")
        return None, probs
    lines = {k.value: k.start_mark.line + fm_offset + 1 for k, _v in node.value if isinstance(k, yaml.ScalarNode)}

    def ln(key: str) -> int:
        return lines.get(key, 2)

    for key in meta:
        if key not in REQUIRED and key not in OPTIONAL:
            bad(ln(str(key)), f"unknown field '{key}' (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in meta or meta[key] in (None, "", []):
            bad(2, f"missing required field '{key}'")

    aid = meta.get("id")
    if aid is not None and (not isinstance(aid, str) or not ID_RE.match(aid)):
        bad(ln("id"), f"id {aid!r} is not a slug (lowercase letters, digits and '-', 3-80 chars)")
    title = meta.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > 200):
        bad(ln("title"), "title must be a string of at most 200 characters")
    lang = meta.get("lang")
    if lang is not None and lang not in ISO639_1:
        bad(ln("lang"), f"unknown lang {lang!r}: use an ISO 639-1 code such as {', '.join(PRODUCT_LANGS)}")
    topics = meta.get("topics")
    if topics is not None:
        if not isinstance(topics, list) or not topics:
            bad(ln("topics"), "topics must be a non-empty list")
        else:
            for t in topics:
                if t not in TOPICS:
                    bad(ln("topics"), f"unknown topic {t!r} (allowed: {', '.join(TOPICS)})")
    countries = meta.get("countries")
    if countries is not None:
        if not isinstance(countries, list) or not countries:
            bad(ln("countries"), 'countries must be a non-empty list of ISO 3166 codes or ["*"]')
        elif countries != ["*"]:
            for c in countries:
                if c not in ISO3166:
                    bad(ln("countries"), f'unknown country {c!r}: use ISO 3166-1 alpha-2 codes, "EU", or ["*"]')
    audience = meta.get("audience")
    if audience is not None and audience not in AUDIENCES:
        bad(ln("audience"), f"audience must be 'public' or 'internal', not {audience!r}")
    dates: dict[str, dt.date | None] = {}
    for key in ("updated", "effective", "expires"):
        if meta.get(key) is not None:
            dates[key] = _as_date(meta[key])
            if dates[key] is None:
                bad(ln(key), f"{key} must be a date YYYY-MM-DD, not {meta[key]!r}")
    if dates.get("effective") and dates.get("expires") and dates["expires"] <= dates["effective"]:
        bad(ln("expires"), "expires must be after effective")
    tr = meta.get("translation_of")
    if tr is not None and (not isinstance(tr, str) or not ID_RE.match(tr)):
        bad(ln("translation_of"), f"translation_of {tr!r} is not an article id")
    if not body.strip():
        bad(body_line, "empty body: write the article below the front matter")
    qnode = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "questions"), None)
    questions = _questions(qnode, meta.get("questions"), tr, ln("questions"), fm_offset, bad) if qnode is not None else {}

    m = FILE_RE.match(path.name)
    if not m:
        bad(1, "file name must be <id>.<lang>.md")
    elif not probs:
        if m["id"] != aid:
            bad(ln("id"), f"id '{aid}' does not match the file name '{path.name}'")
        if m["lang"] != lang:
            bad(ln("lang"), f"lang '{lang}' does not match the file name '{path.name}'")
        if isinstance(topics, list) and topics and path.parent.name != topics[0]:
            bad(ln("topics"), f"first topic '{topics[0]}' does not match the folder '{path.parent.name}'")

    links = []
    for i, line in enumerate(body.split("\n")):
        for lm in LINK_RE.finditer(line):
            links.append((lm.group(1), body_line + i))
    if probs:
        return None, probs
    art = Article(
        id=aid, lang=lang, title=title.strip(), topics=list(topics), countries=list(countries),
        audience=audience, updated=dates["updated"], body=body, path=display, body_line=body_line,
        translation_of=tr, effective=dates.get("effective"), expires=dates.get("expires"),
        content_hash=hashlib.sha256(text.encode()).hexdigest(), links=links, questions=questions,
    )
    return art, probs


def _questions(node: yaml.Node, value: object, translation_of: object, line: int, offset: int,
               bad) -> dict[str, list[str]]:
    """`questions`: what customers ask that this article answers, per language (searched like the text).

    They live on the source article only, one list per language, so a question in Tamil can lead to an
    article that exists only in English.
    """
    if translation_of:
        bad(line, f"questions belong in the source article '{translation_of}' (one list per language there)")
        return {}
    return _lists_by_language(node, value, line, offset, bad, "questions")


def _lists_by_language(node: yaml.Node, value: object, line: int, offset: int, bad,
                       name: str) -> dict[str, list[str]]:
    """Validate a YAML mapping language code -> non-empty list of distinct short texts (NFC)."""
    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        bad(line, f"{name} must map a language code to a list of questions, e.g. ta: [\"...\"]")
        return {}
    out: dict[str, list[str]] = {}
    for knode, vnode in node.value:
        lang, kline = knode.value, knode.start_mark.line + offset + 1
        if lang not in ISO639_1:
            bad(kline, f"{name}: unknown language {lang!r}: use an ISO 639-1 code such as {', '.join(PRODUCT_LANGS)}")
            continue
        if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
            bad(kline, f"{name}.{lang} must be a non-empty list of questions")
            continue
        seen: set[str] = set()
        for item in vnode.value:
            iline = item.start_mark.line + offset + 1
            text = item.value.strip() if isinstance(item, yaml.ScalarNode) and item.tag.endswith(":str") else None
            if not text:
                bad(iline, f"{name}.{lang}: each question must be non-empty text")
            elif len(text) > MAX_QUESTION_CHARS:
                bad(iline, f"{name}.{lang}: question longer than {MAX_QUESTION_CHARS} characters")
            elif text.casefold() in seen:
                bad(iline, f"{name}.{lang}: duplicate question {text!r}")
            else:
                seen.add(text.casefold())
                out.setdefault(lang, []).append(unicodedata.normalize("NFC", text))
    return out


def check_out_of_scope(root: Path) -> tuple[dict[str, list[str]], list[Problem]]:
    """`<articles>/out-of-scope.yaml` (optional): queries the help center does not answer, per language.

    Search compares a query with them and with the articles' questions to decide whether it has a
    confident answer at all (jobs, share price, weather ... should get "contact us", not a wrong article).
    """
    path = Path(root) / OUT_OF_SCOPE_FILE
    if not path.is_file():
        return {}, []
    display = f"{Path(root).name}/{OUT_OF_SCOPE_FILE}"
    probs: list[Problem] = []

    def bad(line: int, msg: str) -> None:
        probs.append(Problem(display, line, msg))

    raw = path.read_bytes()
    if len(raw) > MAX_BYTES:
        bad(1, f"file too large: {len(raw) / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
        return {}, probs
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        value = yaml.safe_load(text)
    except UnicodeDecodeError as e:
        bad(raw[: e.start].count(b"\n") + 1, f"invalid UTF-8 at byte {e.start}: save the file as UTF-8")
        return {}, probs
    except yaml.MarkedYAMLError as e:
        bad((e.problem_mark.line if e.problem_mark else 0) + 1, f"bad YAML: {e.problem or e}")
        return {}, probs
    except (yaml.YAMLError, RecursionError) as e:
        bad(1, f"bad YAML: {type(e).__name__}")
        return {}, probs
    if node is None:
        return {}, probs
    examples = _lists_by_language(node, value, 1, 0, bad, "out-of-scope")
    return (examples if not probs else {}), probs


def check_tree(root: Path) -> tuple[list[Article], list[Problem]]:
    """Load every ``*.md`` article below ``root`` (README.md excepted) and validate the whole tree."""
    root = Path(root)
    if not root.is_dir():
        return [], [Problem(str(root), 0, "articles directory not found")]
    articles: list[Article] = []
    probs: list[Problem] = []
    base = root.parent if root.parent != root else root
    for path in sorted(root.rglob("*.md")):
        if path.name.lower() == "readme.md" or not path.is_file():
            continue
        try:
            display = str(path.relative_to(base))
        except ValueError:
            display = str(path)
        art, p = parse_file(path, display)
        probs.extend(p)
        if art:
            articles.append(art)

    seen: dict[tuple[str, str], Article] = {}
    for a in articles:
        key = (a.id, a.lang)
        if key in seen:
            probs.append(Problem(a.path, 2, f"duplicate id '{a.id}' in lang '{a.lang}' (also in {seen[key].path})"))
        else:
            seen[key] = a
    ids = {a.id: a for a in articles}
    for a in articles:
        if a.translation_of:
            src = ids.get(a.translation_of)
            if src is None:
                probs.append(Problem(a.path, 2, f"translation_of '{a.translation_of}' points to no article"))
            elif src.lang == a.lang:
                probs.append(Problem(a.path, 2, f"translation_of '{a.translation_of}' is in the same language"))
            elif src.translation_of:
                probs.append(Problem(a.path, 2, f"translation_of '{a.translation_of}' is itself a translation"))
        for target, line in a.links:
            if target not in ids:
                probs.append(Problem(a.path, line, f"broken link: no article with id '{target}'"))
    probs.extend(check_out_of_scope(root)[1])
    probs.sort(key=lambda p: (p.path, p.line))
    return articles, probs


def load_articles(root: Path) -> list[Article]:
    """Load a tree that must be valid; raise with every problem listed otherwise."""
    articles, probs = check_tree(root)
    if probs:
        raise ArticleError(probs)
    return articles


class ArticleError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

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
import yaml.composer
import yaml.constructor
import yaml.reader

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
_BOUNDARY = frontmatter.YAMLHandler.FM_BOUNDARY  # a '---' line, as python-frontmatter splits


@dataclass
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        message = " ".join(self.message.split())  # always one line, whatever a YAML error or value held
        return f"{self.path}:{self.line}: {message}"


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
    field_lines: dict[str, int] = field(default_factory=dict)  # front-matter key -> file line, for messages

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


class _BadDate(str):
    """A YAML timestamp that is no calendar date (``2026-02-30``): kept as text so the checker can name it."""

    reason = ""


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        bad = _BadDate(node.value)
        bad.reason = str(e) or type(e).__name__
        return bad


class _FrontMatterLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes for front matter: an impossible date does not abort loading
    (PyYAML raises a bare ValueError without a line), and aliases (``*name``) are refused, since a few of
    them can expand into an exponentially large value."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in front matter",
                                              event.start_mark)
        return super().compose_node(parent, index)


_FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def _show(value: object, limit: int = 60) -> str:
    """A value as it may appear in a one-line message: repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_date(value: object) -> tuple[dt.date | None, str]:
    """(date, "") or (None, why it is not one)."""
    if isinstance(value, dt.datetime):
        return value.date(), ""
    if isinstance(value, dt.date):
        return value, ""
    if isinstance(value, _BadDate):
        return None, f"{str(value)!r} is not a real date ({value.reason})"
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()), ""
        except ValueError as e:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                return None, f"{value.strip()!r} is not a real date ({e})"
    return None, f"must be a date YYYY-MM-DD, not {_show(value)}"


@dataclass
class _Partial:
    """What a file said about itself even when it is broken: lets cross-file checks skip its dependants."""

    ids: set[str] = field(default_factory=set)


def parse_file(path: Path, display: str) -> tuple[Article | None, list[Problem]]:
    """Parse and validate one article file on its own (cross-file rules live in `check_tree`)."""
    art, probs, _partial = _parse(path, display)
    return art, probs


def _parse(path: Path, display: str) -> tuple[Article | None, list[Problem], _Partial]:
    probs: list[Problem] = []
    partial = _Partial()
    m = FILE_RE.match(path.name)
    if m:
        partial.ids.add(m["id"])

    def bad(line: int, msg: str) -> None:
        probs.append(Problem(display, line, msg))

    def fail(line: int, msg: str) -> tuple[None, list[Problem], _Partial]:
        bad(line, msg)
        return None, probs, partial

    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return fail(1, f"file too large: {size / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
        raw = path.read_bytes()
    except OSError as e:
        return fail(1, f"cannot read file: {e.strerror or e}")
    if b"\x00" in raw:
        return fail(raw[: raw.index(b"\x00")].count(b"\n") + 1, "binary file (NUL byte): articles must be UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return fail(raw[: e.start].count(b"\n") + 1, f"invalid UTF-8 at byte {e.start}: save the file as UTF-8")
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines_ = text.split("\n")
    if not _BOUNDARY.fullmatch(lines_[0]):
        return fail(1, "missing YAML front matter: the file must start with a '---' line")
    close = next((i for i in range(1, len(lines_)) if _BOUNDARY.fullmatch(lines_[i])), None)
    if close is None:
        return fail(1, "front matter is not closed: add a '---' line after it")
    fm_text = "\n".join(lines_[1:close])
    body = "\n".join(lines_[close + 1:])
    body_line = close + 2  # file line of the body's first line

    def line_of(mark: yaml.Mark | None) -> int:
        """File line of a position in the front matter (by character index: YAML also breaks lines at
        U+2028 and friends, the file's lines are '\\n')."""
        if mark is None:
            return 2
        return fm_text[: mark.index].count("\n") + 2

    loader = None
    try:
        loader = _FrontMatterLoader(fm_text) if fm_text.strip() else None  # the reader checks characters here
        node = loader.get_single_node() if loader else None
        meta = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        why = e.problem or e.context or type(e).__name__
        if "'\\t'" in why:
            why += " (indent with spaces, not tabs)"
        if e.problem and e.context and e.context_mark and line_of(e.context_mark) != line_of(mark):
            if "end of stream" in e.problem:  # an unclosed quote or bracket: where it opens is the mistake
                why, mark = f"{e.context} that is never closed", e.context_mark
            else:
                why += f" ({e.context} on line {line_of(e.context_mark)})"
        return fail(line_of(mark), f"bad YAML: {why}")
    except yaml.reader.ReaderError as e:
        return fail(fm_text[: e.position].count("\n") + 2,
                    f"bad YAML: character {chr(e.character)!r} is not allowed in front matter")
    except (yaml.YAMLError, RecursionError) as e:
        return fail(2, f"bad YAML: {type(e).__name__}")
    except (ValueError, TypeError, AttributeError, OverflowError) as e:  # a value PyYAML cannot build
        return fail(2, f"bad YAML value: {e}")
    finally:
        if loader:
            loader.dispose()
    if node is None or not isinstance(node, yaml.MappingNode) or not isinstance(meta, dict):
        return fail(2, "front matter must be a YAML mapping of fields (key: value lines)")
    if _depth(node, MAX_YAML_DEPTH) > MAX_YAML_DEPTH:
        return fail(2, f"front matter nested deeper than {MAX_YAML_DEPTH} levels")
    lines: dict[str, int] = {}
    for k, _v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            bad(line_of(k.start_mark), "field names must be plain words")
        elif k.value in lines:
            bad(line_of(k.start_mark), f"duplicate field '{k.value}' (also on line {lines[k.value]})")
        else:
            lines[k.value] = line_of(k.start_mark)

    def ln(key: str) -> int:
        return lines.get(key, 2)

    for key in meta:
        if isinstance(key, str) and key not in REQUIRED and key not in OPTIONAL:
            bad(ln(key), f"unknown field {_show(key)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in meta or meta[key] in (None, "", []):
            bad(ln(key) if key in meta else 2, f"missing required field '{key}'")

    aid = meta.get("id")
    if aid is not None and (not isinstance(aid, str) or not ID_RE.match(aid)):
        bad(ln("id"), f"id {_show(aid)} is not a slug (lowercase letters, digits and '-', 3-80 chars)")
    elif isinstance(aid, str):
        partial.ids.add(aid)
    title = meta.get("title")
    if title not in (None, "") and (not isinstance(title, str) or not title.strip() or len(title) > 200):
        bad(ln("title"), "title must be a non-blank string of at most 200 characters")
    lang = meta.get("lang")
    if lang not in (None, "") and (not isinstance(lang, str) or lang not in ISO639_1):
        bad(ln("lang"), f"unknown lang {_show(lang)}: use an ISO 639-1 code such as {', '.join(PRODUCT_LANGS)}")
    topics = meta.get("topics")
    if topics not in (None, "", []):
        if not isinstance(topics, list):
            bad(ln("topics"), "topics must be a non-empty list")
        else:
            for t in topics:
                if not isinstance(t, str) or t not in TOPICS:
                    bad(ln("topics"), f"unknown topic {_show(t)} (allowed: {', '.join(TOPICS)})")
    countries = meta.get("countries")
    if countries not in (None, "", []):
        if not isinstance(countries, list):
            bad(ln("countries"), 'countries must be a non-empty list of ISO 3166 codes or ["*"]')
        elif countries != ["*"]:
            for c in countries:
                if not isinstance(c, str) or c not in ISO3166:
                    bad(ln("countries"), f'unknown country {_show(c)}: use ISO 3166-1 alpha-2 codes, "EU", or ["*"]')
    audience = meta.get("audience")
    if audience not in (None, "") and (not isinstance(audience, str) or audience not in AUDIENCES):
        bad(ln("audience"), f"audience must be 'public' or 'internal', not {_show(audience)}")
    dates: dict[str, dt.date | None] = {}
    for key in ("updated", "effective", "expires"):
        if meta.get(key) not in (None, ""):
            dates[key], why = _as_date(meta[key])
            if dates[key] is None:
                bad(ln(key), f"{key} {why}")
    if dates.get("effective") and dates.get("expires") and dates["expires"] <= dates["effective"]:
        bad(ln("expires"), f"expires {dates['expires']} must be after effective {dates['effective']}")
    tr = meta.get("translation_of")
    if tr is not None and (not isinstance(tr, str) or not ID_RE.match(tr)):
        bad(ln("translation_of"), f"translation_of {_show(tr)} is not an article id")
    elif isinstance(tr, str) and tr == aid:
        bad(ln("translation_of"), "translation_of names the article itself: give the translation its own id")
    if not body.strip():
        bad(body_line, "empty body: write the article below the front matter")
    qnode = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "questions"), None)
    questions = (_questions(qnode, meta.get("questions"), tr, ln("questions"), line_of, bad)
                 if qnode is not None else {})

    # the file's name must agree with what it declares (checked only for values that are valid themselves,
    # so one mistake is one line)
    if not m:
        bad(1, f"file name {path.name!r} must be <id>.<lang>.md")
    else:
        if isinstance(aid, str) and ID_RE.match(aid) and m["id"] != aid:
            bad(ln("id"), f"id '{aid}' does not match the file name '{path.name}'")
        if isinstance(lang, str) and lang in ISO639_1 and m["lang"] != lang:
            bad(ln("lang"), f"lang '{lang}' does not match the file name '{path.name}'")
    if (isinstance(topics, list) and topics and isinstance(topics[0], str) and topics[0] in TOPICS
            and path.parent.name != topics[0]):
        bad(ln("topics"), f"first topic '{topics[0]}' does not match the folder '{path.parent.name}'")

    links = []
    for i, line in enumerate(body.split("\n")):
        for lm in LINK_RE.finditer(line):
            links.append((lm.group(1), body_line + i))
    if probs:
        return None, probs, partial
    art = Article(
        id=aid, lang=lang, title=title.strip(), topics=list(topics), countries=list(countries),
        audience=audience, updated=dates["updated"], body=body, path=display, body_line=body_line,
        translation_of=tr, effective=dates.get("effective"), expires=dates.get("expires"),
        content_hash=hashlib.sha256(text.encode()).hexdigest(), links=links, questions=questions,
        field_lines=lines,
    )
    return art, probs, partial


def _questions(node: yaml.Node, value: object, translation_of: object, line: int, line_of,
               bad) -> dict[str, list[str]]:
    """`questions`: what customers ask that this article answers, per language (searched like the text).

    They live on the source article only, one list per language, so a question in Tamil can lead to an
    article that exists only in English.
    """
    if translation_of:
        bad(line, f"questions belong in the source article '{translation_of}' (one list per language there)")
        return {}
    return _lists_by_language(node, value, line, line_of, bad, "questions")


def _lists_by_language(node: yaml.Node, value: object, line: int, line_of, bad,
                       name: str) -> dict[str, list[str]]:
    """Validate a YAML mapping language code -> non-empty list of distinct short texts (NFC).

    ``line_of(mark)`` turns a YAML position into the file's line number."""
    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        bad(line, f"{name} must map a language code to a list of questions, e.g. ta: [\"...\"]")
        return {}
    out: dict[str, list[str]] = {}
    for knode, vnode in node.value:
        lang, kline = knode.value, line_of(knode.start_mark)
        if not isinstance(knode, yaml.ScalarNode) or lang not in ISO639_1:
            shown = _show(lang) if isinstance(knode, yaml.ScalarNode) else "(not a word)"
            bad(kline, f"{name}: unknown language {shown}: use an ISO 639-1 code such as {', '.join(PRODUCT_LANGS)}")
            continue
        if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
            bad(kline, f"{name}.{lang} must be a non-empty list of questions")
            continue
        seen: set[str] = set()
        for item in vnode.value:
            iline = line_of(item.start_mark)
            text = item.value.strip() if isinstance(item, yaml.ScalarNode) and item.tag.endswith(":str") else None
            if not text:
                bad(iline, f"{name}.{lang}: each question must be non-empty text")
            elif len(text) > MAX_QUESTION_CHARS:
                bad(iline, f"{name}.{lang}: question longer than {MAX_QUESTION_CHARS} characters")
            elif text.casefold() in seen:
                bad(iline, f"{name}.{lang}: duplicate question {_show(text)}")
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

    try:
        raw = path.read_bytes()
    except OSError as e:
        bad(1, f"cannot read file: {e.strerror or e}")
        return {}, probs
    if len(raw) > MAX_BYTES:
        bad(1, f"file too large: {len(raw) / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
        return {}, probs
    try:
        text = raw.decode("utf-8").lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as e:
        bad(raw[: e.start].count(b"\n") + 1, f"invalid UTF-8 at byte {e.start}: save the file as UTF-8")
        return {}, probs

    def line_of(mark: yaml.Mark | None) -> int:
        return text[: mark.index].count("\n") + 1 if mark is not None else 1

    loader = None
    try:
        loader = _FrontMatterLoader(text)
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        bad(line_of(e.problem_mark or e.context_mark), f"bad YAML: {e.problem or e.context or type(e).__name__}")
        return {}, probs
    except yaml.reader.ReaderError as e:
        bad(text[: e.position].count("\n") + 1, f"bad YAML: character {chr(e.character)!r} is not allowed")
        return {}, probs
    except (yaml.YAMLError, RecursionError) as e:
        bad(1, f"bad YAML: {type(e).__name__}")
        return {}, probs
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        bad(1, f"bad YAML value: {e}")
        return {}, probs
    finally:
        if loader:
            loader.dispose()
    if node is None:
        return {}, probs
    examples = _lists_by_language(node, value, 1, line_of, bad, "out-of-scope")
    return (examples if not probs else {}), probs


def check_tree(root: Path) -> tuple[list[Article], list[Problem]]:
    """Load every ``*.md`` article below ``root`` (README.md excepted) and validate the whole tree.

    A broken article is reported once: translations of it and links to it say nothing more (they are not
    wrong; their target is, and that has its own lines)."""
    root = Path(root)
    if not root.is_dir():
        return [], [Problem(str(root), 1, "articles directory not found")]
    articles: list[Article] = []
    probs: list[Problem] = []
    broken: set[str] = set()  # ids that files with problems declared or are named for
    base = root.parent if root.parent != root else root
    try:
        paths = sorted(root.rglob("*.md"))
    except OSError as e:
        return [], [Problem(str(root), 1, f"cannot list the articles: {e.strerror or e}")]
    for path in paths:
        if path.name.lower() == "readme.md" or not path.is_file():
            continue
        try:
            display = str(path.relative_to(base))
        except ValueError:
            display = str(path)
        # a file name that is not UTF-8 still prints as one readable line
        display = display.encode("utf-8", "backslashreplace").decode("utf-8")
        art, p, partial = _parse(path, display)
        probs.extend(p)
        if art:
            articles.append(art)
        else:
            broken |= partial.ids

    def at(a: Article, key: str) -> int:
        return a.field_lines.get(key, 2)

    seen: dict[tuple[str, str], Article] = {}
    for a in articles:
        key = (a.id, a.lang)
        if key in seen:
            probs.append(Problem(a.path, at(a, "id"),
                                 f"duplicate id '{a.id}' in lang '{a.lang}' (also in {seen[key].path})"))
        else:
            seen[key] = a
    ids = {a.id: a for a in articles}
    for a in articles:
        if a.translation_of:
            src = ids.get(a.translation_of)
            line = at(a, "translation_of")
            if src is None:
                if a.translation_of not in broken:
                    probs.append(Problem(a.path, line, f"translation_of '{a.translation_of}' points to no article"))
            elif src.lang == a.lang:
                probs.append(Problem(a.path, line, f"translation_of '{a.translation_of}' is in the same language"))
            elif src.translation_of:
                probs.append(Problem(a.path, line, f"translation_of '{a.translation_of}' is itself a translation"))
        for target, line in a.links:
            if target not in ids and target not in broken:
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

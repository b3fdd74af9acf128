#!/usr/bin/env python3
"""Write the small synthetic data sets bundled in ``data/``.

All text is produced from the templates, word lists and sentence grammars in
this file with a single ``random.Random(0)`` and the standard library only, so
rerunning the script reproduces byte-identical files::

    python scripts/make_data.py              # writes data/ next to scripts/
    python scripts/make_data.py --out /tmp/d # or anywhere else

Files written (see ``data/README.md``, which this script also writes):

* ``corpus.txt``             pretraining corpus, one sentence per line,
                             blank line between documents
* ``corpus_running.jsonl``   some of the same documents as wrapped running prose
* ``sentiment/{train,validation}.csv``   text,label (negative/neutral/positive)
* ``paraphrase/{train,validation}.csv``  sentence1,sentence2,label (0/1)

The people, teams, companies, products, films and numbers are invented; real
place names are used only as settings.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import textwrap
from pathlib import Path
from random import Random

SEED = 0
N_DOCS = 400
N_REVIEW_DOCS = 800
N_RUNNING = 60
N_SENTIMENT = {"train": 600, "validation": 150}
N_PARAPHRASE = {"train": 400, "validation": 100}

# ---------------------------------------------------------------------------
# Template engine
# ---------------------------------------------------------------------------
#   {slot}       -> ctx[slot] (a string, or a callable taking the rng)
#   [a|b|c]      -> one alternative at random (applied after slots)
#   a / an       -> corrected to the following word after filling

SLOT_RE = re.compile(r"\{(\w+)\}")
ALT_RE = re.compile(r"\[([^\[\]]*)\]")
ART_RE = re.compile(r"\b(a|an|A|An) (\S+)")
AN_EXCEPTIONS = ("hour", "honest", "honor", "heir")
A_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "once", "u.s.", "ure", "ute")


def needs_an(word: str) -> bool:
    w = word.lstrip("\"'($")
    if not w:
        return False
    digits = re.match(r"\d+", w)
    if digits:
        g = digits.group(0)
        return g.startswith("8") or g in ("11", "18")
    lw = w.lower()
    if lw.startswith(AN_EXCEPTIONS):
        return True
    if lw.startswith(A_EXCEPTIONS):
        return False
    return lw[0] in "aeiouàáâäéèêëíîïóôöúûü"


def fix_articles(s: str) -> str:
    def repl(m: re.Match) -> str:
        art, word = m.group(1), m.group(2)
        new = "an" if needs_an(word) else "a"
        if art[0] == "A":
            new = new.capitalize()
        return f"{new} {word}"

    return ART_RE.sub(repl, s)


def cap_first(s: str) -> str:
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
        if ch.isdigit():
            return s
    return s


BAD_PATTERNS = ["{", "}", "[", "]", "  ", " ,", " .", " ;", " :", ",,", "..", " '", "\n", "\t"]


def check_text(s: str) -> None:
    for bad in BAD_PATTERNS:
        if bad in s:
            raise ValueError(f"template artifact {bad!r} in: {s!r}")
    if s != s.strip():
        raise ValueError(f"stray whitespace in: {s!r}")
    if not re.search(r"[.!?]\"?$", s):
        raise ValueError(f"no final punctuation in: {s!r}")
    for m in ART_RE.finditer(s):
        if (m.group(1).lower() == "an") != needs_an(m.group(2)):
            raise ValueError(f"article error in: {s!r}")


def fill(rng: Random, template: str, ctx: dict) -> str:
    def slot(m: re.Match) -> str:
        value = ctx[m.group(1)]
        if callable(value):
            value = value(rng)
        return str(value)

    s = SLOT_RE.sub(slot, template)
    s = ALT_RE.sub(lambda m: rng.choice(m.group(1).split("|")), s)
    s = re.sub(r"(?<=[A-Za-z])\.\.(?!\.)", ".", s)  # "Inc.." / "U.S.." at the end
    s = fix_articles(s)
    s = cap_first(s)
    check_text(s)
    return s


# ---------------------------------------------------------------------------
# Shared vocabulary and number helpers
# ---------------------------------------------------------------------------

FIRST_NAMES = [
    "Maria", "James", "Aisha", "Kenji", "Elena", "Tomás", "Priya", "Oluwaseun", "Sofia", "Lars",
    "Chloé", "Mateus", "Hannah", "Diego", "Ingrid", "Samuel", "Mei", "Rafael", "Noor", "Patrick",
    "Zoë", "André", "Beatriz", "Felix", "Amara", "Lucas", "Renée", "Hiroshi", "Fatima", "Daniel",
    "Léa", "Joaquín", "Nadia", "Oscar", "Yara", "Grace", "Marcus", "Anja", "Emeka", "Clara",
    "Thomas", "Leila", "Victor", "Rosa", "Ben", "Sara", "Jonas", "Irene", "Kwame", "Laura",
]
LAST_NAMES = [
    "Alves", "Okafor", "Chen", "Lindqvist", "Moreau", "Haddad", "Novak", "Ramírez", "Kowalski",
    "Nakamura", "Brennan", "Müller", "Osei", "Patel", "Rossi", "Fischer", "Delgado", "Park",
    "Santos", "Lambert", "Gallagher", "Ibrahim", "Svensson", "Ferreira", "Costa", "Dubois",
    "Whitaker", "Jansen", "Moretti", "Lindgren", "Sato", "Kaplan", "Adeyemi", "Horvath", "Bianchi",
    "Nguyen", "Walsh", "Herrera", "Becker", "Mensah", "Carvalho", "O'Neill", "Andersen",
    "Goldberg", "Kim", "Reyes", "Hughes", "Petrov", "Van Dijk", "Ortiz",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
# AP style: months abbreviated before a day number.
MONTH_ABBR = {"January": "Jan.", "February": "Feb.", "August": "Aug.", "September": "Sept.",
              "October": "Oct.", "November": "Nov.", "December": "Dec."}
QUARTERS = ["first", "second", "third", "fourth"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]
NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
UNIVERSITIES = [
    "the University of Lisbon", "the University of São Paulo", "McAllister University",
    "the Northbridge Institute of Technology", "the University of Zürich", "Kingsford College",
    "the University of Edinburgh", "the Technical University of Kraków", "Lakeshore University",
    "the University of Bogotá", "the Eastern Institute of Science", "Harwell University",
]
JOURNALS = ["the Journal of Field Ecology", "the Bulletin of Materials Research", "the Review of Public Health",
            "the Journal of Planetary Science"]


def person(rng: Random) -> tuple[str, str]:
    last = rng.choice(LAST_NAMES)
    return f"{rng.choice(FIRST_NAMES)} {last}", last


def dec(rng: Random, lo: float, hi: float) -> str:
    """A number with one decimal place, uniformly from [lo, hi] (integer arithmetic)."""
    n = rng.randint(round(lo * 10), round(hi * 10))
    return f"{n // 10}.{n % 10}"


def num(rng: Random, lo: int, hi: int, step: int = 1) -> str:
    return f"{rng.randrange(lo, hi + 1, step):,}"


def cents(n: int) -> str:
    return f"{n // 100}.{n % 100:02d}"


def count(n: int, sing: str, plur: str) -> str:
    word = NUM_WORDS[n] if 0 <= n < 10 else str(n)
    return f"{word} {sing if n == 1 else plur}"


def date(rng: Random, month: str | None = None) -> str:
    month = month or rng.choice(MONTHS)
    return f"{MONTH_ABBR.get(month, month)} {rng.randint(1, 28)}"


def R(lo, hi, step=1):
    """A ctx value that draws a fresh integer each time it is used."""
    return lambda rng: num(rng, lo, hi, step)


def Y(lo, hi):
    """A ctx value that draws a fresh year (no thousands separator)."""
    return lambda rng: str(rng.randint(lo, hi))


def D(lo, hi):
    """A ctx value that draws a fresh one-decimal number each time it is used."""
    return lambda rng: dec(rng, lo, hi)


def C(*options):
    return lambda rng: rng.choice(options)


def A(domain: str, aspect: int, positive: bool):
    """A ctx value drawing a review adjective from the sentiment word lists, so
    the corpus and the sentiment task share their opinion vocabulary."""
    return lambda rng: rng.choice(SENT_DOMAINS[domain]["aspects"][aspect][1 if positive else 2])


def compose(rng: Random, ctx: dict, intro: list, body: list, quotes: list, outro: list) -> list[str]:
    """Intro, then body sentences in their listed (logical) order with quotes
    interleaved, then a closing sentence: 4 to 10 sentences in all."""
    n = rng.choice([4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 8, 9, 10])
    middle = n - 2
    n_quotes = min(len(quotes), middle, rng.choice([0, 1, 1, 1, 2]))
    n_body = min(len(body), middle - n_quotes)
    body_ids = sorted(rng.sample(range(len(body)), n_body))
    middle_t = [body[i] for i in body_ids]
    for q in rng.sample(quotes, n_quotes):
        middle_t.insert(rng.randint(1 if middle_t else 0, len(middle_t)), q)
    templates = [rng.choice(intro)] + middle_t + [rng.choice(outro)]
    # News style: a person's full name at first mention, the surname after it.
    people = [k[:-5] for k in ctx if k.endswith("_last") and k[:-5] in ctx]
    named: set[str] = set()
    out = []
    for t in templates:
        for p in people:
            full, last = "{" + p + "}", "{" + p + "_last}"
            if p in named:
                t = t.replace(full, last)
            elif full in t or last in t:
                t = t.replace(last, full)
                end = t.index(full) + len(full)
                t = t[:end] + t[end:].replace(full, last)
                named.add(p)
        out.append(fill(rng, t, ctx))
    return out


# ---------------------------------------------------------------------------
# Corpus topics
# ---------------------------------------------------------------------------

TEAM_TOWNS = ["Riverton", "Ashford", "Kingsbridge", "Millbrook", "Port Carrow", "Eastfield",
              "Westhaven", "Lakeside", "Montréal", "São Paulo", "Bogotá", "Kraków", "Porto",
              "Denver", "Dublin", "Oslo", "Brookdale", "Stonebridge", "Fairmont", "Glenwood"]
NICKNAMES = ["Falcons", "Rovers", "Harriers", "Mariners", "Comets", "Wolves", "Pioneers", "Otters",
             "Rangers", "Kestrels", "Lynx", "Stallions", "Herons", "Sentinels", "Foxes", "Badgers",
             "Royals", "Tigers", "Clippers", "Hawks"]
LEAGUES = ["Northern League", "Premier Division", "Continental League", "Coastal Conference",
           "National Championship", "Eastern Conference", "Western Conference"]
SPORTS = [
    dict(sport="soccer", unit=("goal", "goals"), score=(1, 5), margin=(1, 3), per_game=(0.6, 1.9),
         season=(8, 24), stat=(1, 3), period="half",
         positions=["striker", "midfielder", "winger", "forward"],
         venues=["Stadium", "Park", "Ground"], defense="goalkeeper"),
    dict(sport="basketball", unit=("point", "points"), score=(88, 124), margin=(2, 18),
         per_game=(94.0, 112.0), season=(310, 780), stat=(18, 41), period="quarter",
         positions=["point guard", "shooting guard", "forward", "center"],
         venues=["Arena", "Center", "Fieldhouse"], defense="center"),
    dict(sport="ice hockey", unit=("goal", "goals"), score=(2, 7), margin=(1, 3), per_game=(1.8, 3.1),
         season=(9, 31), stat=(1, 3), period="period",
         positions=["center", "winger", "defenseman"],
         venues=["Arena", "Ice Center", "Coliseum"], defense="goaltender"),
    dict(sport="rugby", unit=("point", "points"), score=(15, 42), margin=(1, 20), per_game=(12.0, 24.0),
         season=(48, 160), stat=(8, 21), period="half",
         positions=["fly-half", "scrum-half", "winger", "fullback"],
         venues=["Stadium", "Park", "Oval"], defense="fullback"),
    dict(sport="baseball", unit=("run", "runs"), score=(3, 11), margin=(1, 5), per_game=(2.9, 4.6),
         season=(18, 64), stat=(1, 4), period="inning",
         positions=["shortstop", "catcher", "center fielder", "first baseman"],
         venues=["Park", "Field", "Stadium"], defense="pitcher"),
]


def team_names(rng: Random, k: int) -> list[tuple[str, str]]:
    towns = rng.sample(TEAM_TOWNS, k)
    nicks = rng.sample(NICKNAMES, k)
    return [(f"{t} {n}", n) for t, n in zip(towns, nicks)]


def game_score(rng: Random, sp: dict) -> tuple[int, int]:
    lo_s, hi_s = sp["score"]
    hi = rng.randint(lo_s, hi_s)
    lo = max(0, hi - rng.randint(*sp["margin"]))
    return hi, lo


def doc_sports(rng: Random) -> list[str]:
    sp = rng.choice(SPORTS)
    (team, nick), (rival, rival_nick), (rival2, _), (_, _) = team_names(rng, 4)
    town = team.rsplit(" ", 1)[0]
    coach, coach_last = person(rng)
    player, player_last = person(rng)
    hi, lo = game_score(rng, sp)
    won = rng.random() < 0.6
    sing, plur = sp["unit"]
    games = rng.randint(12, 30)
    ctx = dict(
        team=team, nick=nick, rival=rival, rival_nick=rival_nick, rival2=rival2, town=town,
        sport=sp["sport"], league=rng.choice(LEAGUES), coach=coach, coach_last=coach_last,
        player=player, player_last=player_last, position=rng.choice(sp["positions"]),
        position2=lambda r: r.choice(sp["positions"] + [sp["defense"]]),
        venue=f"{rng.choice(LAST_NAMES)} {rng.choice(sp['venues'])}", year=rng.randint(2017, 2024),
        hi=hi, lo=lo, weekday=rng.choice(WEEKDAYS), weekday2=C(*WEEKDAYS), date=lambda r: date(r),
        attendance=R(4000, 62000, 100), pct=D(2, 18), pct2=D(2, 9), period=sp["period"],
        result_verb="[beat|defeated]" if won else "lost to",
        result_noun="[win|victory] over" if won else "loss to",
        stat=count(rng.randint(*sp["stat"]), sing, plur),
        lead_by=count(rng.randint(1, 2) if sing != "point" else rng.randint(3, 12), sing, plur),
        season_stat=count(rng.randint(*sp["season"]), sing, plur),
        wins=games // 2 + rng.randint(-3, 5), games=games, place=C(*ORDINALS),
        weeks=C("two", "three", "four", "six"), newplayer=lambda r: person(r)[0],
        age=R(19, 33), other_city=C(*TEAM_TOWNS), years=C("two", "three", "four"),
        month=C(*MONTHS), avg=D(*sp["per_game"]), unit=plur, money=R(40, 450, 5),
        ticket=R(35, 140), doctor=lambda r: person(r)[0], old_year=Y(1978, 2012),
        remaining=C("three", "four", "five", "seven", "nine", "11"), seasons=C("three", "four", "five", "six"),
    )
    intro = [
        "The {team} are a professional {sport} team based in {town} that plays in the {league}.",
        "The {team} opened their {year} season with a {hi}-{lo} {result_noun} the {rival} at {venue}.",
        "Few teams in the {league} have changed as quickly as the {team}, who hired {coach} as head coach {years} years ago.",
        "The {team} have become one of the most talked-about teams in {sport} after a busy start to the {year} season.",
        "{coach} has spent {seasons} seasons trying to turn the {team} into a contender in the {league}.",
    ]
    body = [
        "On {weekday}, the {nick} {result_verb} the {rival} {hi}-{lo} in front of {attendance} fans at {venue}.",
        "{player}, the team's {position}, [scored|finished with] {stat} in the game.",
        "The {nick} led by {lead_by} after the first {period}.",
        "{player_last} has {season_stat} this season, the most on the team.",
        "The {nick} have won {wins} of their {games} games this season and sit {place} in the {league}.",
        "Attendance at {venue} has risen by {pct} percent since last season, according to figures released by the league.",
        "{player_last} missed {weeks} weeks with a knee injury earlier this season but has played in every game since.",
        "Dr. {doctor}, the team physician, said {player_last} would be [monitored|assessed] [daily|before each game] for the rest of the season.",
        "The {nick} signed {newplayer}, a {age}-year-old {position2} from {other_city}, on a {years}-year contract in {month}.",
        "Analysts noted that the {nick} have allowed just {avg} {unit} per game, the fewest in the {league}.",
        "The team's owners have proposed a ${money} million renovation of {venue}, including new seating and a larger video screen.",
        "Season tickets for next year will cost an average of ${ticket}, up {pct2} percent from this season, the club said.",
        "The {nick} have not won the {league} title since {old_year}, when they beat the {rival2} in the final.",
    ]
    quotes = [
        ("\"We played with [real heart|a lot of patience|great discipline] [tonight|today], and the fans [carried us|gave us energy],\" said coach {coach}."
         if won else
         "\"We made too many mistakes, and the {rival_nick} [punished us|made us pay],\" said coach {coach}."),
        "\"I just tried to [stay calm|keep it simple|do my job] and help the team,\" {player_last} told reporters.",
        "\"The {rival_nick} are a [tough|strong|well-coached] team, and we [respect them|know what to expect],\" coach {coach_last} said before the game.",
        "\"Our goal this year is simple: reach the playoffs,\" said coach {coach_last}.",
    ]
    outro = [
        "The {nick} will [host|visit] the {rival2} on {weekday2} [in their next game|before a short break].",
        "With {remaining} games left in the regular season, the {nick} remain in contention for a playoff place.",
        "The club expects a sellout crowd at {venue} for its final home game of the season on {date}.",
        "The {nick} return to action against the {rival2} at {venue} on {date}.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


COMPANY_PREFIXES = ["Northwind", "Bluestone", "Calder", "Meridian", "Harborview", "Silverline",
                    "Granite Peak", "Tessera", "Ironbridge", "Alder", "Corvid", "Lumen", "Quayside",
                    "Redfern", "Solenne", "Veritas", "Brightwater", "Oakridge", "Pinnacle", "Westmark"]
SECTORS = [
    dict(sector="technology", suffixes=["Systems Inc.", "Software Inc.", "Technologies Inc."],
         role="provider of cloud software", products=["cloud software", "data storage", "laptops", "smartphones"],
         facilities=["data center", "research lab"], cost="memory chip"),
    dict(sector="food", suffixes=["Foods Corp.", "Brands Inc."], role="maker of packaged foods",
         products=["frozen meals", "packaged snacks", "coffee", "breakfast cereal"],
         facilities=["bakery", "distribution center"], cost="ingredient"),
    dict(sector="energy", suffixes=["Energy Ltd.", "Power Corp."], role="utility",
         products=["natural gas", "solar panels", "electricity"],
         facilities=["solar farm", "power plant"], cost="fuel"),
    dict(sector="automotive", suffixes=["Motors Co.", "Automotive Inc."], role="carmaker",
         products=["electric vehicles", "pickup trucks", "car batteries"],
         facilities=["assembly plant", "battery factory"], cost="steel"),
    dict(sector="pharmaceutical", suffixes=["Pharmaceuticals Inc.", "Biosciences Inc."],
         role="drugmaker", products=["vaccines", "allergy medicines", "diabetes treatments"],
         facilities=["research center", "manufacturing plant"], cost="research"),
    dict(sector="retail", suffixes=["Retail Group", "Stores Inc."], role="retailer",
         products=["clothing", "home goods", "groceries"],
         facilities=["warehouse", "flagship store"], cost="shipping"),
    dict(sector="airline", suffixes=["Airways", "Air Group Ltd."], role="airline",
         products=["international travel", "business class seats", "holiday packages"],
         facilities=["maintenance hangar", "training center"], cost="jet fuel"),
]
EXCHANGES = ["New York Stock Exchange", "Nasdaq", "Toronto Stock Exchange", "London Stock Exchange"]
HQ_CITIES = ["Boston", "Chicago", "Seattle", "Toronto", "Zürich", "São Paulo", "Dublin", "Lisbon",
             "Austin", "Montréal", "Denver", "Oslo", "Edinburgh", "Melbourne"]
BANKS = ["Harlow Grey Securities", "Kessler Capital", "Marston Partners", "Bayview Research",
         "Lindell Brothers", "Crown Street Advisors"]


def company(rng: Random, sector: dict | None = None) -> tuple[str, str, dict]:
    sector = sector or rng.choice(SECTORS)
    prefix = rng.choice(COMPANY_PREFIXES)
    return f"{prefix} {rng.choice(sector['suffixes'])}", prefix, sector


def doc_finance(rng: Random) -> list[str]:
    full, short, sec = company(rng)
    partner_full, _, _ = company(rng)
    while partner_full.startswith(short):
        partner_full, _, _ = company(rng)
    up = rng.random() < 0.6
    ceo, ceo_last = person(rng)
    rev_t = rng.randint(12, 480)  # tenths of a billion
    pct_t = rng.randint(5, 180)  # tenths of a percent
    denom = 1000 + pct_t if up else 1000 - pct_t
    prev_h = (rev_t * 10 * 1000 * 2 + denom) // (2 * denom)  # hundredths of a billion
    est_h = rev_t * 10 * rng.randint(94, 106) // 100  # hundredths of a billion
    m2 = rng.randint(40, 220)
    m1 = m2 + rng.randint(5, 40) * (1 if up else -1)
    ni_prev = rng.randint(20, 900)
    ni = ni_prev * rng.randint(105, 140) // 100 if up else ni_prev * rng.randint(55, 95) // 100
    debt_prev = rng.randint(15, 90)
    debt = debt_prev - rng.randint(1, 10)
    qi = rng.randrange(4)
    employees = rng.randrange(1500, 90000, 100)
    ctx = dict(
        full=full, short=short, sector=sec["sector"], role=sec["role"],
        product=rng.choice(sec["products"]), facility=C(*sec["facilities"]), cost=sec["cost"],
        partner_full=partner_full, city=rng.choice(HQ_CITIES), city2=C(*HQ_CITIES),
        ceo=ceo, ceo_last=ceo_last, cfo=lambda r: person(r)[0], analyst=lambda r: person(r)[0],
        bank=C(*BANKS), data_firm=C("Refinitiv", "FactSet", "LSEG Data", "Visible Alpha"),
        exchange=rng.choice(EXCHANGES), weekday=rng.choice(WEEKDAYS),
        quarter=QUARTERS[qi], next_quarter=QUARTERS[(qi + 1) % 4],
        month2=C(*MONTHS), date=lambda r: date(r),
        rev=f"{rev_t // 10}.{rev_t % 10}", rev_pct=f"{pct_t // 10}.{pct_t % 10}",
        rev_prev=f"{prev_h // 100}.{prev_h % 100:02d}", rev_est=f"{est_h // 100}.{est_h % 100:02d}",
        stock_pct=D(1.5, 14), pct=D(1, 25), ytd=D(2, 40), eps=lambda r: cents(r.randint(8, 420)),
        ni=f"{ni:,}", ni_prev=f"{ni_prev:,}", m1=f"{m1 // 10}.{m1 % 10}", m2=f"{m2 // 10}.{m2 % 10}",
        debt=f"{debt // 10}.{debt % 10}", debt_prev=f"{debt_prev // 10}.{debt_prev % 10}",
        month=C(*MONTHS), buyback=R(100, 2000, 50), jobs=R(80, 1200, 10), price=lambda r: cents(r.randint(800, 24000)),
        employees=f"{employees:,}", hq_staff=f"{employees * rng.randint(5, 25) // 100:,}",
        moved="[rose|jumped|climbed]" if up else "[fell|slid|dropped]",
        rose="[rose|grew|increased]" if up else "[fell|declined|slipped]",
        quality="[stronger|better]-than-expected" if up else "[weaker|worse]-than-expected",
        guidance="[raised|lifted]" if up else "[cut|lowered]",
        reason="strong demand" if up else "higher costs and weaker demand",
        pos_prod=A("product", 0, True), neg_support=A("product", 2, False),
        margin_verb="improved" if up else "narrowed",
        ytd_verb="[gained|risen]" if up else "[lost|fallen]",
        helped=(f"helped by lower {sec['cost']} costs and a weaker U.S. dollar" if up
                else f"hurt by higher {sec['cost']} costs and a stronger U.S. dollar"),
    )
    intro = [
        "{full} is a {sector} company based in {city} with about {employees} employees.",
        "Shares of {full} {moved} {stock_pct} percent on {weekday} after the company reported {quality} results for the {quarter} quarter.",
        "{full} said on {weekday} that its {quarter}-quarter revenue {rose} {rev_pct} percent to ${rev} billion.",
        "{full}, the {city}-based {role}, reported {quality} earnings for the {quarter} quarter on {weekday}.",
    ]
    body = [
        "Revenue for the quarter was ${rev} billion, compared with ${rev_prev} billion a year earlier.",
        "Net income was ${ni} million, or ${eps} a share, compared with ${ni_prev} million a year earlier.",
        "Analysts had expected revenue of about ${rev_est} billion, according to a survey by {data_firm}.",
        "The company {guidance} its forecast for the full year, citing {reason} for {product}.",
        "Sales in Latin America, e.g. in Brazil and Mexico, grew {pct} percent, while sales in Asia were [flat|little changed].",
        "Chief executive {ceo} said demand for {product} in the U.S. and Europe [remained strong|had started to slow].",
        "Operating margin {margin_verb} to {m1} percent from {m2} percent a year earlier.",
        "The results were {helped}.",
        "{short} also announced a share buyback of up to ${buyback} million.",
        "Customer reviews of its {product} have been [mostly positive|mixed]: buyers call the quality {pos_prod}, but some say customer support is {neg_support}.",
        "The company plans to open a new {facility} in {city2} next year, creating about {jobs} jobs.",
        "Under a new agreement, {short} will supply {product} to {partner_full}.",
        "{short} employs about {employees} people worldwide, including roughly {hq_staff} at its headquarters in {city}.",
        "The company's debt stood at ${debt} billion at the end of the quarter, down from ${debt_prev} billion in {month}.",
        "{short} shares have {ytd_verb} {ytd} percent so far this year.",
        "The broader market was [mixed|little changed] on {weekday}, as investors waited for the U.S. Federal Reserve's next decision on interest rates.",
    ]
    quotes = [
        ("\"We are pleased with the [momentum|progress] in our {product} business,\" said {ceo}, the chief executive."
         if up else
         "\"This was a difficult quarter, and we are taking steps to reduce costs,\" said {ceo}, the chief executive."),
        "\"The numbers were [solid|mixed|a bit soft], but the outlook matters more than one quarter,\" said {analyst}, an analyst at {bank}.",
        "{cfo}, the chief financial officer, told analysts on a conference call that costs would [rise|ease] in the second half of the year.",
        "\"Investors want to see steady growth, not surprises,\" said {analyst}, who follows {short} for {bank}.",
    ]
    outro = [
        "{short} will report its {next_quarter}-quarter results in {month2}.",
        "Shares of {short} closed at ${price} on the {exchange}.",
        "The company's annual shareholder meeting is scheduled for {date} in {city}.",
        "{short} said it would give more details about its plans at an investor day in {month2}.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


# (name, region, allowed events: r = rain, h = heat, s = snow)
WEATHER_CITIES = [
    ("Seattle", "western Washington", "rs"), ("Denver", "the Colorado Front Range", "hs"),
    ("Chicago", "northern Illinois", "rhs"), ("Boston", "eastern Massachusetts", "rhs"),
    ("Montréal", "southern Quebec", "rhs"), ("Oslo", "southern Norway", "rs"),
    ("Kraków", "southern Poland", "rhs"), ("Zürich", "northern Switzerland", "rhs"),
    ("São Paulo", "southeastern Brazil", "rh"), ("Bogotá", "the Andean highlands", "r"),
    ("Lisbon", "central Portugal", "rh"), ("Porto", "northern Portugal", "r"),
    ("Melbourne", "the state of Victoria", "rh"), ("Seville", "southern Spain", "h"),
    ("Málaga", "the Costa del Sol", "rh"), ("Edinburgh", "southeast Scotland", "rs"),
    ("Reykjavík", "southwest Iceland", "rs"), ("Austin", "central Texas", "rh"),
    ("Osaka", "western Japan", "rh"), ("Nairobi", "central Kenya", "r"),
]


def doc_weather(rng: Random) -> list[str]:
    city, region, events = rng.choice(WEATHER_CITIES)
    event = rng.choice(events)
    met, met_last = person(rng)
    month = rng.choice({"r": ["March", "April", "October", "November"],
                        "h": ["June", "July", "August"],
                        "s": ["December", "January", "February"]}[event])
    ctx = dict(
        city=city, region=region, month=month, weekday=rng.choice(WEEKDAYS), weekday2=C(*WEEKDAYS),
        met=met, met_last=met_last, univ=C(*UNIVERSITIES), resident=lambda r: person(r)[0],
        mayor=lambda r: person(r)[0], years=C("20", "30", "40", "50"), pct=D(4, 35),
        temp=D(36, 44.5), temp_int=R(35, 42), tmin=R(24, 29), normal={"r": R(8, 16), "h": R(22, 28), "s": R(1, 5)}[event], mm=D(40, 160),
        hours=C("six", "12", "24", "36"), kmh=R(70, 130), flights=R(20, 240), homes=R(2000, 60000, 100),
        calls=R(300, 2500), rise=D(0.8, 3.5), cm=R(15, 60), neg=R(12, 28), tons=R(400, 6000, 100),
        n=C("five", "six", "eight", "12", "15"),
        warning={"r": "flood warning", "h": "heat warning", "s": "winter storm warning"}[event],
        event_noun={"r": "storm", "h": "heat wave", "s": "cold spell"}[event],
    )
    intro = {
        "r": ["A slow-moving storm brought heavy rain and strong winds to {city} on {weekday}.",
              "Heavy rain fell across {region} on {weekday}, [flooding roads|disrupting traffic] in {city} and nearby towns."],
        "h": ["Temperatures in {city} climbed to {temp} degrees Celsius on {weekday}, the highest {month} reading in more than {years} years.",
              "A heat wave settled over {region} on {weekday}, pushing temperatures in {city} above {temp_int} degrees Celsius."],
        "s": ["{city} woke up to [a thick layer of snow|icy roads|freezing fog] on {weekday} morning after an unusually cold night.",
              "A winter storm swept across {region} on {weekday}, bringing heavy snow to {city}."],
    }[event]
    body = ["The national weather service issued a {warning} for {city} and the rest of {region}."]
    body += {
        "r": ["About {mm} millimeters of rain fell in {hours} hours, [flooding|closing] several streets near the river.",
              "Wind gusts reached {kmh} kilometers per hour at the airport, where {flights} flights were canceled.",
              "Power was cut to about {homes} homes, and crews worked through the night to restore it.",
              "Emergency services received more than {calls} calls between 6 p.m. and midnight.",
              "The river rose {rise} meters above its normal level by {weekday2} morning."],
        "h": ["Electricity demand hit a record as residents turned on air conditioners and fans.",
              "Health officials urged people to drink plenty of water and to avoid outdoor exercise between noon and 4 p.m.",
              "The city opened {n} cooling centers in libraries and community halls.",
              "Hospitals reported a {pct} percent rise in visits for heat-related illness, e.g. dehydration and heat exhaustion.",
              "Overnight temperatures stayed above {tmin} degrees, giving residents little relief."],
        "s": ["Up to {cm} centimeters of snow fell overnight, and schools across {region} were closed.",
              "The overnight low of minus {neg} degrees Celsius was the coldest in {years} years.",
              "Road crews spread about {tons} tons of salt on major roads before the morning rush hour.",
              "Dozens of flights were delayed at the airport while crews cleared the runways.",
              "The city opened {n} warming centers for people without stable housing."],
    }[event]
    body += [
        "Dr. {met}, a meteorologist at {univ}, said the pattern was linked to an unusual shift in the jet stream.",
        "The average {month} temperature in {city} is about {normal} degrees Celsius.",
        "Officials said trains and buses were running with [minor|long] delays.",
        "Forecasters expect conditions to [improve|ease] by {weekday2}.",
    ]
    quotes = [
        "\"This is [unusual|not unheard of] for {month}, but the [duration|intensity] is [remarkable|worth watching],\" Dr. {met_last} said.",
        ("\"It was too hot to sleep, so we sat on the balcony until 2 a.m.,\" said {resident}."
         if event == "h" else
         "\"We lost power at about 6 a.m., and it has been a long day,\" said {resident}, who lives near the city center."),
        ("\"Please check on elderly neighbors and stay indoors during the hottest hours,\" the mayor, {mayor}, told reporters."
         if event == "h" else
         "\"Please check on elderly neighbors and stay off the roads if you can,\" the mayor, {mayor}, told reporters."),
    ]
    outro = [
        "The [weekend|next week] is expected to be [drier|milder|calmer], according to the latest forecast.",
        "Officials said they would review the city's response once the {event_noun} has passed.",
        "Residents can find updates on the city's website and on local radio.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


SPECIES = [("Atlantic puffin", "Atlantic puffins", "the North Atlantic"),
           ("white stork", "white storks", "southern Europe"), ("barn owl", "barn owls", "North America"),
           ("river otter", "river otters", "the northern Rockies"), ("sea turtle", "sea turtles", "the Caribbean"),
           ("red squirrel", "red squirrels", "northern England"), ("Arctic tern", "Arctic terns", "Greenland"),
           ("grey seal", "grey seals", "the Baltic Sea"), ("common swift", "common swifts", "central Europe"),
           ("snowy owl", "snowy owls", "northern Canada")]


def doc_science(rng: Random) -> list[str]:
    lead, lead_last = person(rng)
    field = rng.choice(["ecology", "astronomy", "materials", "medicine"])
    univ = rng.choice(UNIVERSITIES)
    sp_sing, sp_pl, sp_region = rng.choice(SPECIES)
    y1 = rng.randint(1990, 2008)
    ctx = dict(
        lead=lead, lead_last=lead_last, univ=univ, univ2=C(*[u for u in UNIVERSITIES if u != univ]),
        journal=JOURNALS[["ecology", "materials", "medicine", "astronomy"].index(field)], weekday=rng.choice(WEEKDAYS), pct=D(5, 45), pct2=D(70, 96),
        years=C("three", "five", "eight", "ten", "12"), months=C("six", "nine", "18", "24"),
        other=lambda r: person(r)[0], student=lambda r: person(r)[0], n=R(40, 2400, 10),
        species=sp_sing, species_pl=sp_pl, sp_region=sp_region, y1=y1, y2=rng.randint(2019, 2024),
        a=R(1800, 9000, 50), b=R(300, 1700, 10), ly=R(40, 900, 10), mass=D(1.2, 12), days=D(2, 60),
        temp=R(300, 1400, 10), cycles=R(500, 3000, 100), minutes=C("20", "30", "45"),
        mmhg=D(3, 11), company=lambda r: company(r)[0],
        samples={"ecology": "field sites", "astronomy": "telescope observations",
                 "materials": "test cells", "medicine": "patients"}[field],
        methods={"ecology": "satellite tracking and DNA sampling",
                 "astronomy": "computer simulations and follow-up observations",
                 "materials": "electron microscopy and X-ray imaging",
                 "medicine": "blood tests and home monitoring"}[field],
        field_noun={"ecology": "conservation", "astronomy": "the search for other worlds",
                    "materials": "energy storage", "medicine": "public health"}[field],
    )
    intro = {
        "ecology": ["Researchers at {univ} have found that {species_pl} in {sp_region} are declining faster than expected.",
                    "A new study led by Dr. {lead} of {univ} suggests that {species} populations in {sp_region} have fallen sharply since {y1}."],
        "astronomy": ["Astronomers at {univ} have discovered a planet orbiting a star about {ly} light-years from Earth.",
                      "A team led by Dr. {lead} of {univ} has found a new planet around a nearby star."],
        "materials": ["Engineers at {univ} have developed a battery material that can store {pct} percent more energy than current designs.",
                      "A new battery design from {univ} could make electric cars lighter and cheaper, according to a study led by Dr. {lead}."],
        "medicine": ["A new study from {univ} suggests that a {minutes}-minute daily walk can lower blood pressure in older adults.",
                     "Researchers led by Dr. {lead} of {univ} have found that regular walking helps control blood pressure."],
    }[field]
    specific = {
        "ecology": ["The number of breeding pairs fell from about {a} in {y1} to {b} in {y2}.",
                    "Habitat loss and warmer summers appear to be the main causes of the decline.",
                    "The team fitted {n} {species_pl} with small tracking devices."],
        "astronomy": ["The planet is about {mass} times the mass of Earth and completes one orbit every {days} days.",
                      "The discovery was made using data from a telescope in the Atacama Desert in Chile.",
                      "Its surface temperature is estimated at about {temp} degrees Celsius, far too hot for liquid water."],
        "materials": ["The material combines [silicon|sodium|iron] with a thin layer of carbon.",
                      "In laboratory tests, the battery kept {pct2} percent of its capacity after {cycles} charging cycles.",
                      "The team has applied for a patent and is in talks with manufacturers, including {company}."],
        "medicine": ["The trial followed {n} volunteers aged 60 to 80 for {months} months.",
                     "Blood pressure fell by an average of {mmhg} points in the walking group.",
                     "Participants in the control group, who kept their usual routine, saw no significant change."],
    }[field]
    body = [
        "The results were published on {weekday} in {journal}.",
        specific[0],
        "The team analyzed data from {n} {samples} collected over {years} years.",
        specific[1],
        "The effect was about {pct} percent larger than earlier estimates had suggested.",
        specific[2],
        "The researchers used several methods, e.g. {methods}, to check their results.",
        "Dr. {lead_last} and colleagues spent {months} months analyzing the data before submitting the paper.",
        "The study builds on earlier work by researchers at {univ2}.",
        "The work was funded in part by the U.S. National Science Foundation and the European Research Council.",
        "Other scientists said the sample was small and that the findings would need to be confirmed.",
        "All of the data and computer code used in the study have been made publicly available.",
    ]
    quotes = [
        "\"It would be naïve to think that one study settles the question,\" said Dr. {other}, who was not involved in the research.",
        "\"We were surprised by how [clear|consistent|strong] the signal was,\" Dr. {lead_last} said.",
        "\"The next step is to see whether the same pattern holds elsewhere,\" said {student}, a graduate student on the team.",
    ]
    outro = [
        "The team plans to [expand|repeat] the study [next year|with a larger sample].",
        "Dr. {lead_last} said the group hopes to publish [further|follow-up] results within two years.",
        "The findings could help [guide policy|inform future research] in {field_noun}.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


DISHES = [
    dict(name="paella", origin="Valencia, Spain", short="Spain", ings=["rice", "saffron", "chicken"], sub="seafood", kind="main"),
    dict(name="ratatouille", origin="Provence, France", short="France", ings=["eggplant", "zucchini", "tomatoes"], sub="sweet peppers", kind="main"),
    dict(name="crème brûlée", origin="France", short="France", ings=["cream", "egg yolks", "sugar"], sub="brown sugar", kind="dessert"),
    dict(name="pão de queijo", origin="Minas Gerais, Brazil", short="Brazil", ings=["tapioca flour", "cheese", "milk"], sub="olive oil", kind="snack"),
    dict(name="jollof rice", origin="West Africa", short="West Africa", ings=["rice", "tomatoes", "peppers"], sub="smoked fish", kind="main"),
    dict(name="shakshuka", origin="North Africa", short="North Africa", ings=["eggs", "tomatoes", "peppers"], sub="feta cheese", kind="main"),
    dict(name="feijoada", origin="Brazil", short="Brazil", ings=["black beans", "pork", "onions"], sub="smoked sausage", kind="main"),
    dict(name="tarte tatin", origin="France", short="France", ings=["apples", "butter", "sugar"], sub="pears", kind="dessert"),
    dict(name="gazpacho", origin="Andalusia, Spain", short="Spain", ings=["tomatoes", "cucumbers", "olive oil"], sub="watermelon", kind="soup"),
    dict(name="goulash", origin="Hungary", short="Hungary", ings=["beef", "paprika", "onions"], sub="mushrooms", kind="main"),
    dict(name="risotto", origin="northern Italy", short="Italy", ings=["rice", "parmesan", "butter"], sub="mushrooms", kind="main"),
    dict(name="ramen", origin="Japan", short="Japan", ings=["noodles", "broth", "eggs"], sub="tofu", kind="soup"),
    dict(name="moussaka", origin="Greece", short="Greece", ings=["eggplant", "lamb", "béchamel sauce"], sub="lentils", kind="main"),
    dict(name="crêpes Suzette", origin="Paris, France", short="France", ings=["flour", "eggs", "orange juice"], sub="lemon juice", kind="dessert"),
    dict(name="pad thai", origin="Thailand", short="Thailand", ings=["rice noodles", "shrimp", "peanuts"], sub="chicken", kind="main"),
    dict(name="pierogi", origin="Poland", short="Poland", ings=["potatoes", "cheese", "onions"], sub="cabbage", kind="main"),
]
RESTAURANTS = ["Café Lumière", "Casa Ramírez", "The Copper Pot", "Bistro Élan", "La Mesa Verde",
               "Little Harbor Kitchen", "Café São Bento", "The Olive Room", "Maison Dubois",
               "The Blue Door", "Café Kraków", "Trattoria Bianchi", "The Corner Table", "Café Aurora"]
FOOD_CITIES = ["Lisbon", "Montréal", "São Paulo", "Chicago", "Melbourne", "Dublin", "Boston",
               "Kraków", "Seattle", "Edinburgh", "Austin", "Zürich", "Valencia", "Porto"]
SERVE_WITH = {"main": ["crusty bread", "a green salad", "a glass of red wine"],
              "dessert": ["fresh berries", "a cup of strong coffee", "a glass of sweet wine"],
              "snack": ["a cup of strong coffee", "fresh fruit", "a cold drink"],
              "soup": ["crusty bread", "a green salad", "toasted bread"]}


def doc_cooking(rng: Random) -> list[str]:
    d = rng.choice(DISHES)
    chef, chef_last = person(rng)
    rest = rng.choice(RESTAURANTS)
    ctx = dict(
        dish=d["name"], origin=d["origin"], origin_short=d["short"], ing1=d["ings"][0], ing2=d["ings"][1],
        ing3=d["ings"][2], sub=d["sub"], chef=chef, chef_last=chef_last, restaurant=rest,
        city=rng.choice(FOOD_CITIES), years=C("ten", "15", "20", "25", "30"), g=R(150, 800, 50),
        servings=C("four", "six", "eight"), min=R(5, 40, 5), total=R(30, 150, 15), kcal=R(220, 780, 10),
        n=R(40, 300, 10), price=R(6, 24), class_price=R(45, 120, 5), days=C("two", "three", "four"),
        decade=C("1960s", "1970s", "1980s", "1990s"), customer=lambda r: person(r)[0],
        serve_with=C(*SERVE_WITH[d["kind"]]),
        pos_food=A("restaurant", 0, True), neg_food=A("restaurant", 0, False),
        pos_service=A("restaurant", 1, True), neg_service=A("restaurant", 1, False),
        pos_place=A("restaurant", 2, True), neg_place=A("restaurant", 2, False),
        temp_word={"main": "hot", "dessert": "[chilled|at room temperature]", "snack": "warm", "soup": "[hot|cold]"}[d["kind"]],
    )
    if d["name"] in ("gazpacho",):
        ctx["temp_word"] = "cold"
    intro = [
        "{dish} is a traditional dish from {origin} made with {ing1}, {ing2} and {ing3}.",
        "At {restaurant} in {city}, chef {chef} has been serving {dish} for more than {years} years.",
        "Few dishes are as closely linked to {origin_short} as {dish}, a [simple|humble|generous] combination of {ing1}, {ing2} and {ing3}.",
        "Visitors to {restaurant} in {city} often order the same thing: the {dish}.",
    ]
    body = [
        "The dish became popular outside {origin_short} in the {decade}, when [restaurants|food writers|families who moved abroad] brought it to new audiences.",
        "The recipe [calls for|uses] about {g} grams of {ing1} for {servings} servings.",
        "Start by [preparing|measuring|washing] the {ing1} and setting the {ing2} aside.",
        "Cook the {ing2} over medium heat for {min} minutes, stirring [often|gently|now and then].",
        "Beginners often make the mistake of [stirring too much|using too much heat|rushing the last step].",
        "Many cooks add a little extra flavor at the end, e.g. a pinch of salt or a squeeze of lemon.",
        "Some versions replace the {ing3} with {sub}, which gives a [lighter|richer|milder] result.",
        "The whole dish takes about {total} minutes to prepare and serves {servings} people.",
        "Chef {chef_last} recommends buying fresh {ing3} from a local market whenever possible.",
        "A typical serving contains roughly {kcal} calories.",
        "{restaurant} sells about {n} portions of {dish} on a busy Saturday.",
        "Reviews of {restaurant} call the {dish} {pos_food}, although a few guests found the service {neg_service}.",
        "The dining room is {pos_place} but can get {neg_place} on weekends, and the staff are {pos_service}.",
        "Prices at {restaurant} start at ${price} for a small plate.",
        "Leftovers keep in the refrigerator for up to {days} days.",
    ]
    quotes = [
        "\"The secret is patience; you cannot rush the {ing1},\" chef {chef_last} said.",
        "\"My grandmother made it every Sunday, and I still use her recipe,\" said chef {chef}.",
        "\"People expect something complicated, but good {dish} is really about good {ing2},\" chef {chef_last} said.",
        "\"We come here every week just for the {dish},\" said {customer}, a regular customer.",
    ]
    outro = [
        "Serve the {dish} {temp_word} with {serve_with}.",
        "{restaurant} is open Tuesday to Sunday, and reservations are recommended on weekends.",
        "Cooking classes at {restaurant}, including one devoted to {dish}, cost ${class_price} per person.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


DESTINATIONS = [
    dict(city="Lisbon", country="Portugal", attrs=["the Belém Tower", "the Alfama district"], currency="euros", dish="pastéis de nata"),
    dict(city="Porto", country="Portugal", attrs=["the Ribeira waterfront", "the Dom Luís I Bridge"], currency="euros", dish="francesinha"),
    dict(city="Kraków", country="Poland", attrs=["Wawel Castle", "the Main Market Square"], currency="zloty", dish="pierogi"),
    dict(city="Québec City", country="Canada", attrs=["the old town walls", "the Château Frontenac"], currency="Canadian dollars", dish="poutine"),
    dict(city="Montréal", country="Canada", attrs=["Mount Royal", "the Old Port"], currency="Canadian dollars", dish="smoked meat"),
    dict(city="São Paulo", country="Brazil", attrs=["Paulista Avenue", "the Municipal Market"], currency="reais", dish="pão de queijo"),
    dict(city="Reykjavík", country="Iceland", attrs=["the Hallgrímskirkja church", "the old harbor"], currency="krónur", dish="fish soup"),
    dict(city="Kyoto", country="Japan", attrs=["the Fushimi Inari shrine", "the Gion district"], currency="yen", dish="ramen"),
    dict(city="Valencia", country="Spain", attrs=["the City of Arts and Sciences", "the Central Market"], currency="euros", dish="paella"),
    dict(city="Edinburgh", country="Scotland", attrs=["the castle", "the Royal Mile"], currency="pounds", dish="smoked salmon"),
    dict(city="Cape Town", country="South Africa", attrs=["Table Mountain", "the waterfront"], currency="rand", dish="bobotie"),
    dict(city="Oaxaca", country="Mexico", attrs=["the Zócalo", "the Santo Domingo church"], currency="pesos", dish="mole"),
    dict(city="Málaga", country="Spain", attrs=["the Alcazaba", "the Picasso Museum"], currency="euros", dish="gazpacho"),
    dict(city="Zürich", country="Switzerland", attrs=["the lake shore", "the Old Town"], currency="Swiss francs", dish="rösti"),
    dict(city="Bogotá", country="Colombia", attrs=["the Gold Museum", "Monserrate hill"], currency="pesos", dish="ajiaco"),
    dict(city="Vancouver", country="Canada", attrs=["Stanley Park", "Granville Island"], currency="Canadian dollars", dish="salmon"),
]
AIRLINES = ["Northwind Airways", "Atlantic Blue", "Meridian Air", "SkyBridge Airlines", "Aurora Air", "Coastal Airways"]
HUBS = ["London", "New York", "Toronto", "Madrid", "Frankfurt", "Chicago", "Paris", "Lisbon", "Miami"]
HOTELS = ["Hotel Miramar", "the Grand Central Hotel", "the Harbor Inn", "Hotel Élise", "the Old Mill Hotel",
          "Casa Azul", "the Linden House", "the Station Hotel"]
CAFES = ["Café Aurora", "Café Central", "Café Lumière", "Café Nova", "Café São Bento", "Café Verde"]


def doc_travel(rng: Random) -> list[str]:
    d = rng.choice(DESTINATIONS)
    m1 = rng.randrange(2, 6)
    ctx = dict(
        city=d["city"], country=d["country"], attr1=d["attrs"][0], attr2=d["attrs"][1], currency=d["currency"],
        local_dish=d["dish"], visitors=D(1.2, 14), hotel=rng.choice(HOTELS), room=R(90, 320, 5),
        hostel=R(25, 60), season=C("summer", "spring", "the high season"),
        airline=rng.choice(AIRLINES), freq=C("daily", "weekly", "twice-weekly"),
        hub=C(*[h for h in HUBS if h != d["city"]]), hours=D(1.5, 11), days=C("two", "three", "five", "seven"),
        m1=MONTHS[m1], m2=MONTHS[m1 + rng.randint(2, 4)], temp=R(17, 27), pass_price=R(12, 60),
        cafe=rng.choice(CAFES), pct=D(3, 22), taxi=R(20, 70, 5), tourist=lambda r: person(r)[0],
        origin_city=C(*(HUBS + HQ_CITIES)), official=lambda r: person(r)[0], guide=lambda r: person(r)[0],
        years=C("ten", "15", "20"), days_n=C("three", "four", "five"),
        pos_room=A("hotel", 0, True), neg_room=A("hotel", 0, False), pos_staff=A("hotel", 1, True),
    )
    intro = [
        "{city} has become one of the most popular destinations in {country}, attracting about {visitors} million visitors last year.",
        "For travelers on a budget, {city} offers [good food|historic streets|easy public transport] at reasonable prices.",
        "With {attr1} and {attr2}, {city} rewards visitors who like to explore on foot.",
        "{city} is easy to reach, compact and full of surprises, which makes it ideal for a long weekend.",
    ]
    body = [
        "Most visitors start at {attr1}, which is within walking distance of the main station.",
        "Visitors should book guided tours of {attr2} at least {days} days in advance during the summer.",
        "Several museums, e.g. the city's history museum, offer free entry on the first Sunday of each month.",
        "{cafe}, a small café near {attr1}, serves strong coffee and fresh pastries from 7 a.m. every day.",
        "The local specialty is {local_dish}, which is served in many small restaurants near {attr2}.",
        "Many restaurants close between 3 p.m. and 7 p.m., so plan lunch accordingly.",
        "A double room at {hotel} costs about ${room} a night in {season}, while hostels charge from ${hostel}.",
        "Guests describe the staff at {hotel} as {pos_staff} and the rooms as {pos_room}, although some say the breakfast is [bland|disappointing|poor].",
        "Cheaper guesthouses near the station can be {neg_room}, so read recent reviews before booking.",
        "{airline} operates {freq} flights to {city} from {hub}, and the trip takes about {hours} hours.",
        "Taxis from the airport to the city center cost around {taxi} {currency}, but the train is faster and cheaper.",
        "A three-day public transport pass costs about {pass_price} {currency}.",
        "The best time to visit is between {m1} and {m2}, when daytime temperatures average about {temp} degrees Celsius.",
        "Pickpockets can be a problem in crowded areas, e.g. on trams and in markets, so keep valuables out of sight.",
        "Tourism now accounts for about {pct} percent of the local economy, and most visitors come from Europe and the U.S.",
        "Visitors from the U.S. and Canada should check entry requirements before booking.",
    ]
    quotes = [
        "\"We came for two days and stayed for a week,\" said {tourist}, a visitor from {origin_city}.",
        "\"Tourism is growing by about {pct} percent a year, and we want it to stay sustainable,\" said {official}, the city's director of tourism.",
        "\"The best advice I can give is to get up early and walk,\" said {guide}, who has led tours in {city} for {years} years.",
    ]
    outro = [
        "Whatever the season, {city} rewards travelers who take their time.",
        "More information is available from the {city} tourist office near the main square.",
        "Most travelers agree that {days_n} days is enough to see the highlights of {city}.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


FILM_TITLES = ["The Quiet Harbor", "Northern Lights", "A Winter in Lisbon", "The Last Train to Porto",
               "Salt and Stone", "The Long Summer", "Paper Birds", "The Glass Orchard", "Small Hours",
               "The River Between Us", "Café Paradiso", "A House in São Paulo", "The Lighthouse Keeper",
               "Blue Evenings", "The Night Market", "Letters from Kraków"]
FESTIVALS = ["Riverton Film Festival", "Lakeside International Film Festival", "Montréal New Cinema Festival",
             "Porto Documentary Week", "Northern Screen Festival", "Edinburgh Summer Film Festival"]
GENRES = ["quiet drama", "family comedy", "thriller", "romantic drama", "documentary", "coming-of-age story"]
SETTINGS = ["a small fishing town", "1970s Lisbon", "a mountain village", "a busy hospital",
            "a failing restaurant", "the suburbs of Montréal", "a remote island", "a newspaper office"]
PAPERS = ["the Riverton Herald", "the Evening Courier", "the Lakeside Times", "City Weekly", "the Morning Post"]


def doc_arts(rng: Random) -> list[str]:
    director, director_last = person(rng)
    actor, actor_last = person(rng)
    title = rng.choice(FILM_TITLES)
    ctx = dict(
        title=title, director=director, director_last=director_last, actor=actor, actor_last=actor_last,
        festival=rng.choice(FESTIVALS), genre=rng.choice(GENRES), setting=rng.choice(SETTINGS),
        weekday=rng.choice(WEEKDAYS), weekday2=C(*WEEKDAYS), date=lambda r: date(r),
        runtime=R(88, 164), weeks=C("six", "eight", "ten", "12"), budget=D(1.5, 40),
        box=D(2, 60), composer=lambda r: person(r)[0], cowriter=lambda r: person(r)[0],
        novelist=lambda r: person(r)[0], critic=lambda r: person(r)[0], viewer=lambda r: person(r)[0],
        paper=C(*PAPERS), other_title=C(*[t for t in FILM_TITLES if t != title]),
        hours=C("two", "three", "six"), n=R(40, 220), countries=R(12, 60), minutes=C("five", "six", "ten"),
        year=Y(1962, 2005), visitors=R(20000, 150000, 1000), years=C("ten", "15", "20"),
        adj=C("subtle", "moving", "powerful", "quietly brilliant"),
        pos_plot=A("film", 0, True), neg_plot=A("film", 0, False), pos_act=A("film", 1, True),
        neg_act=A("film", 1, False), pos_music=A("film", 2, True), neg_music=A("film", 2, False),
        char=C("a young doctor", "a retired teacher", "a struggling musician", "a chef", "a journalist"),
    )
    intro = [
        "{title}, the new film by director {director}, premiered at the {festival} on {weekday}.",
        "The {festival} opened on {weekday} with {title}, a {genre} by director {director} set in {setting}.",
        "After {years} years of work, director {director} has finally finished {title}, a {genre} set in {setting}.",
    ]
    body = [
        "The film follows {char} who returns to {setting} after many years away.",
        "{actor} plays the lead role, and critics have praised the performance as {adj}.",
        "The film runs for {runtime} minutes and was shot in {weeks} weeks on a budget of about ${budget} million.",
        "{director_last} wrote the script with {cowriter}, based on a novel by {novelist}.",
        "Some critics found the plot {neg_plot}, but most praised the [soundtrack|cinematography|acting].",
        "Critics called the acting {pos_act} and the music {pos_music}, but several found the script {neg_plot}.",
        "One reviewer described the ending as {neg_plot}, while another called it {pos_plot}.",
        "The soundtrack was written by composer {composer}, who also scored {other_title}.",
        "Audiences gave the film a standing ovation that lasted about {minutes} minutes.",
        "The film earned ${box} million in its first weekend in U.S. theaters.",
        "Tickets for the festival's closing night sold out in less than {hours} hours.",
        "The festival will show {n} films from {countries} countries this year, including several debut features.",
        "The {festival} was founded in {year} and now attracts about {visitors} visitors each year.",
    ]
    quotes = [
        "\"I wanted to make a film about memory and the places we leave behind,\" {director_last} said at a news conference.",
        "\"It is the kind of role that actors wait years for,\" {actor_last}, who plays the lead, told reporters.",
        "\"The script was not perfect, but the acting was wonderful,\" said {critic}, a film critic for {paper}.",
        "\"Honestly, the ending was disappointing, but the first hour is excellent,\" said {viewer}, who saw the film on opening night.",
    ]
    outro = [
        "{title} opens in theaters across the country on {date}.",
        "The film will be available on streaming services later this year.",
        "The {festival} runs until {weekday2}, and the main awards will be announced on the final night.",
    ]
    return compose(rng, ctx, intro, body, quotes, outro)


TOPICS = [("sports", doc_sports), ("finance", doc_finance), ("weather", doc_weather),
          ("science", doc_science), ("cooking", doc_cooking), ("travel", doc_travel), ("arts", doc_arts)]


def make_corpus(rng: Random) -> list[tuple[str, list[str]]]:
    topics = [TOPICS[i % len(TOPICS)] for i in range(N_DOCS)]
    rng.shuffle(topics)
    return [(name, fn(rng)) for name, fn in topics]


def running_text(rng: Random, sentences: list[str]) -> str:
    """Reuters-21578 style: paragraphs of 1-3 sentences, lines wrapped at 70
    columns, each paragraph after the first starting with a newline and four
    spaces."""
    paras, i = [], 0
    while i < len(sentences):
        k = rng.randint(1, 2) if i == 0 else rng.randint(1, 3)
        paras.append(" ".join(sentences[i:i + k]))
        i += k
    wrap = dict(width=70, break_long_words=False, break_on_hyphens=False)
    out = textwrap.fill(paras[0], **wrap)
    for p in paras[1:]:
        out += "\n" + textwrap.fill(p, initial_indent="    ", **wrap)
    assert " ".join(out.split()) == " ".join(sentences)
    return out


# ---------------------------------------------------------------------------
# Sentiment (text, label)
# ---------------------------------------------------------------------------

SENT_DOMAINS = {
    "restaurant": dict(
        aspects=[
            (["the food", "the paella", "the soup", "the dessert", "the crème brûlée", "the risotto",
              "the ramen", "the bread", "the goulash", "the pasta", "the shakshuka", "the coffee"],
             ["delicious", "excellent", "fresh", "perfectly cooked", "wonderful", "superb", "tasty"],
             ["bland", "cold", "greasy", "stale", "overcooked", "tasteless", "awful"]),
            (["the service", "the waiter", "the staff"],
             ["friendly", "attentive", "quick", "excellent", "helpful", "wonderful"],
             ["slow", "rude", "careless", "unfriendly", "terrible", "disorganized"]),
            (["the café", "the dining room", "the atmosphere", "the terrace"],
             ["cozy", "charming", "lovely", "relaxed", "excellent"],
             ["noisy", "cramped", "dirty", "gloomy", "disappointing"]),
        ],
        place=["this restaurant", "this café", "the bistro", "this place"], cat="meals", cat1="meal",
        had="had", ing="ordering", again="we will definitely come back", never="we will not come back",
        happy="we left happy",
    ),
    "product": dict(
        aspects=[
            (["the phone", "the laptop", "the blender", "the kettle", "the camera", "the vacuum cleaner"],
             ["excellent", "reliable", "fantastic", "impressive", "well made", "great", "brilliant"],
             ["flimsy", "useless", "unreliable", "faulty", "awful", "terrible", "cheaply made"]),
            (["the battery", "the screen", "the charger", "the keyboard", "the speaker", "the motor"],
             ["excellent", "powerful", "impressive", "reliable", "solid", "superb"],
             ["weak", "disappointing", "poor", "unreliable", "useless"]),
            (["customer support", "the support team", "the seller"],
             ["quick", "helpful", "excellent", "friendly"],
             ["slow", "useless", "careless", "unhelpful", "terrible"]),
        ],
        place=["this brand", "this model", "this product"], cat="gadgets", cat1="gadget",
        had="bought", ing="buying", again="I would buy it again", never="I would not buy it again",
        happy="overall I am happy with it",
    ),
    "film": dict(
        aspects=[
            (["the film", "the plot", "the story", "the ending", "the script", "the dialogue"],
             ["brilliant", "moving", "gripping", "clever", "wonderful", "excellent", "beautiful"],
             ["boring", "dull", "predictable", "confusing", "tedious", "forgettable", "clumsy"]),
            (["the acting", "the lead actor", "the cast", "the performance"],
             ["superb", "powerful", "convincing", "excellent", "wonderful"],
             ["wooden", "unconvincing", "flat", "awful", "terrible"]),
            (["the soundtrack", "the cinematography", "the music", "the editing"],
             ["beautiful", "stunning", "excellent", "lovely", "memorable"],
             ["annoying", "messy", "forgettable", "distracting", "poor"]),
        ],
        place=["this film", "this movie", "the sequel"], cat="films", cat1="film",
        had="seen", ing="watching", again="I would happily watch it again", never="I would not watch it again",
        happy="I left the theater smiling",
    ),
    "hotel": dict(
        aspects=[
            (["the hotel", "the room", "the bed", "the bathroom", "the pool"],
             ["spotless", "comfortable", "lovely", "excellent", "spacious", "wonderful"],
             ["dirty", "cramped", "shabby", "noisy", "tiny", "awful"]),
            (["the staff", "the reception", "the service", "the manager"],
             ["friendly", "helpful", "welcoming", "excellent", "attentive"],
             ["rude", "unhelpful", "slow", "unfriendly", "terrible"]),
            (["the breakfast", "the location", "the view", "the café downstairs"],
             ["excellent", "perfect", "delicious", "stunning", "great"],
             ["poor", "disappointing", "inconvenient", "bland", "terrible"]),
        ],
        place=["this hotel", "this place", "the resort"], cat="hotels", cat1="hotel",
        had="stayed in", ing="booking", again="we will definitely stay here again",
        never="we will not stay here again", happy="we had a great stay",
    ),
}

SENT_TEMPLATES = {
    "positive": [
        "{I1} was {P1}.",
        "{I1} was {P1} and {I2} was {P2}.",
        "{I1} was [really|truly|absolutely] {P1}.",
        "I [really|absolutely] loved {I1}; it was {P1}.",
        "[Highly recommended|Worth every penny|Would recommend]: {I1} was {P1}.",
        "{again}, because {I1} was {P1}.",
        "One of the best {cat} I have {had} [this year|in a long time].",
        "{I1} exceeded [all|our|my] expectations.",
        "{I1} was {P1}, and {I2} was even better.",
        "Five stars: {I1} was {P1} and {I2} was {P2}.",
        # negation
        "{I1} was not bad at all.",
        "{I1} was not {N1} at all; in fact it was {P1}.",
        "I cannot complain about {I1}.",
        "I had my doubts, but {I1} was far from {N1}.",
        "Nothing about {I1} was {N1}.",
        # mixed, positive overall
        "{I1} was [a little|slightly|a bit] {N1}, but {I2} was {P2} and {happy}.",
        "Despite {I1} being {N1}, {I2} was so {P2} that it was worth it.",
        "{I1} was {N1} at first, but it improved and I ended up loving it.",
    ],
    "negative": [
        "{I1} was {N1}.",
        "{I1} was {N1} and {I2} was {N2}.",
        "{I1} was [really|truly|absolutely] {N1}.",
        "I regret {ing} it; {I1} was {N1}.",
        "[Avoid|Skip] {place}: {I1} was {N1}.",
        "One of the worst {cat} I have {had} in years.",
        "{I1} was {N1}, and {I2} was even worse.",
        "A complete waste of money: {I1} was {N1}.",
        "{never}, because {I1} was {N1}.",
        # negation
        "{I1} was hardly {P1}.",
        "{I1} was not {P1} at all.",
        "I would not recommend {I1} to anyone.",
        "{I1} was far from {P1}.",
        "I expected {I1} to be {P1}, but that was not the case.",
        "Nothing about {I1} was {P1}.",
        # mixed, negative overall
        "{I1} was {P1}, but {I2} was so {N2} that {never}.",
        "Although {I1} was {P1}, {I2} was {N2} and ruined the experience.",
        "{I1} looked {P1} at first, but it turned out to be {N1}.",
    ],
    "neutral": [
        "{I1} was okay, nothing special.",
        "{I1} was fine, about what I expected.",
        "It was an average {cat1}: not great, not terrible.",
        "{I1} was neither good nor bad.",
        "I have mixed feelings about {I1}.",
        "{I1} was {P1} on some days and {N1} on others.",
    ],
}
NEUTRAL_FACTS = {
    "restaurant": ["We ordered the {dish} and two coffees.", "The restaurant is near the main square in {city}.",
                   "{rest} opens at {hour} a.m. on weekdays.", "We went to {rest} on a {weekday} evening.",
                   "The menu changes every {weekday}.", "{rest} seats about {n} people."],
    "product": ["I bought the {product} in {month} for ${price}.", "The {product} comes in black, white and blue.",
                "The package arrived on {weekday}.", "The {product} weighs about {kg} kilograms.",
                "I have used the {product} every day for {weeks}."],
    "film": ["The film runs for about {mins} minutes.", "The film is based on a novel by {name}.",
             "I watched it on {weekday} with two friends.", "The film was shot in {city} in {month}.",
             "{title} opens in theaters on {weekday}."],
    "hotel": ["The hotel has {n} rooms and a small café on the ground floor.",
              "We stayed for {k} nights in {month}.", "Check-in starts at {hour} p.m.",
              "The hotel is a {walk}-minute walk from the station.", "We booked {hotel} for a trip to {city}."],
}


# ---------------------------------------------------------------------------
# Held-out sentiment words
# ---------------------------------------------------------------------------
# About half of each aspect's positive and negative adjectives never occur in a
# labelled training row: validation rows of the polar templates draw their
# adjectives from this set only, so a classifier can only know these words from
# the pretraining corpus (the review documents below use every adjective).
# Antonyms made with "un-" sit on the same side as their base word.
HELD_OUT = frozenset([
    # positive
    "delicious", "superb", "tasty", "attentive", "helpful", "cozy", "charming", "fantastic",
    "impressive", "solid", "gripping", "clever", "convincing", "stunning", "memorable",
    "spotless", "spacious", "welcoming",
    # negative
    "greasy", "stale", "tasteless", "careless", "disorganized", "gloomy", "cramped", "flimsy",
    "faulty", "cheaply made", "weak", "unhelpful", "tedious", "clumsy", "predictable", "wooden",
    "unconvincing", "messy", "distracting", "shabby", "inconvenient",
])
SPLITS = ("train", "validation")


def adjectives(aspect: tuple, positive: bool, split: str | None = None) -> list[str]:
    """An aspect's positive or negative adjectives: all of them (split None), the ones labelled
    training rows use ("train") or the held-out ones validation rows use ("validation")."""
    words = aspect[1 if positive else 2]
    if split is None:
        return list(words)
    return [w for w in words if (w in HELD_OUT) == (split == "validation")]


def has_word(text: str, word: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text, re.IGNORECASE) is not None


def check_held_out() -> None:
    """The split is usable: each list has words on both sides, no word has both polarities, and the
    fixed wording of the labelled templates never contains a held-out word."""
    pos = {w for d in SENT_DOMAINS.values() for a in d["aspects"] for w in a[1]}
    neg = {w for d in SENT_DOMAINS.values() for a in d["aspects"] for w in a[2]}
    assert not pos & neg, pos & neg
    assert HELD_OUT <= pos | neg, HELD_OUT - pos - neg
    for d in SENT_DOMAINS.values():
        for a in d["aspects"]:
            for positive in (True, False):
                for split in SPLITS:
                    assert adjectives(a, positive, split), (a, positive, split)
    fixed = [t for ts in SENT_TEMPLATES.values() for t in ts] + [t for ts in NEUTRAL_FACTS.values() for t in ts]
    fixed += [str(v) for d in SENT_DOMAINS.values() for k, v in d.items() if k != "aspects"]
    fixed += [t for d in SENT_DOMAINS.values() for a in d["aspects"] for t in a[0]]
    fixed += DISHES_NAMES() + FILM_TITLES + HOTELS + RESTAURANTS
    for text in fixed:
        for w in HELD_OUT:
            assert not has_word(text, w), (w, text)


def DISHES_NAMES() -> list[str]:
    return [d["name"] for d in DISHES]


# ---------------------------------------------------------------------------
# Corpus topic: reviews
# ---------------------------------------------------------------------------
# Multi-sentence reviews of the sentiment task's four domains with one overall
# tone each: every adjective of SENT_DOMAINS occurs here, beside an opening and a
# closing that give the tone away and beside other adjectives of the same
# polarity. The wording is the corpus's own (no labelled template is reused), so
# what carries over to the sentiment task is the words, not the sentences.

REVIEW_BRANDS = ["Calder", "Northwind", "Bluestone", "Meridian", "Silverline", "Harborview"]
REVIEW_SUBJECT = {
    "restaurant": lambda rng: rng.choice(RESTAURANTS),
    "hotel": lambda rng: rng.choice(HOTELS),
    "film": lambda rng: rng.choice(FILM_TITLES),
}
REVIEW_FACTS = {
    "restaurant": ["We had [dinner|lunch] at {subject} in {city} on a {weekday} [evening|afternoon].",
                   "A friend booked a table for four at {subject} for my birthday."],
    "product": ["I ordered {subject} [online|from a local shop] in {month} for ${price}.",
                "My old {kind} broke in {month}, so I replaced it with {subject}."],
    "film": ["I saw {subject} at a [small|local] cinema on {weekday} night.",
             "{subject} was showing at the cinema near my flat, so I went on {weekday}."],
    "hotel": ["We spent {nights} nights at {subject} in {month}.",
              "I booked {subject} for a [work trip|short holiday] to {city}."],
}
REVIEW_OPEN = {
    True: ["I loved {subject} from the very first minute.",
           "{subject} was a real pleasure from start to finish.",
           "I had high hopes for {subject}, and it did not let me down.",
           "What a treat {subject} turned out to be."],
    False: ["I had high hopes for {subject}, but it let me down badly.",
            "{subject} was a real disappointment from start to finish.",
            "I wanted to like {subject}, but I could not.",
            "What a letdown {subject} turned out to be."],
}
REVIEW_ASPECT = {
    True: ["{item} turned out to be {adj}, just as friends had promised.",
           "What impressed me most was {item}, which was {adj} and {adj2}.",
           "{item} felt {adj} from beginning to end.",
           "I was pleased to find {item} so {adj}.",
           "My favourite part was {item}: {adj} and {adj2}.",
           "On top of that, {item} was {adj}.",
           "{item} was {adj}, {adj2} and everything I had hoped for.",
           "I found {item} {adj}, and {item2} was just as {adj2}."],
    False: ["Sadly, {item} was {adj} and {adj2}.",
            "{item} turned out to be {adj}, which was a real letdown.",
            "The worst part was {item}, which felt {adj}.",
            "I was annoyed to find {item} so {adj}.",
            "To make things worse, {item} was {adj}.",
            "{item} was {adj}, {adj2} and nothing like what I had been promised.",
            "I found {item} {adj}, and {item2} was just as {adj2}."],
}
# Frames shared by both tones: here only the rest of the review tells the polarity.
REVIEW_ASPECT_SHARED = ["Even {item} was {adj}.", "Everyone with me agreed that {item} was {adj}."]
REVIEW_CONTRAST = {True: "The only letdown was {item}, which was {adj}.",
                   False: "The one bright spot was {item}, which was {adj}."}
REVIEW_CLOSE = {
    True: {"restaurant": ["I would go back [tomorrow|in a heartbeat].", "We are already planning our next visit."],
           "product": ["I would buy it again without a second thought.", "I have already recommended it to my friends."],
           "film": ["I would gladly see it a second time.", "I told all my friends to go and see it."],
           "hotel": ["I would stay here again in a heartbeat.", "We have already booked our next trip."],
           None: ["Five out of five from me.", "Warmly recommended to anyone.", "Worth every cent."]},
    False: {"restaurant": ["I will not be going back.", "We paid and left as quickly as we could."],
            "product": ["I returned it [after a week|within a month].", "It went back in its box after [three|five] days."],
            "film": ["I nearly walked out before the end.", "I checked my watch [every ten minutes|more than once]."],
            "hotel": ["We checked out a day early.", "We moved to another hotel after [one|two] nights."],
            None: ["One out of five from me.", "A waste of money.", "Save your money and go elsewhere."]},
}


def doc_reviews(rng: Random) -> list[str]:
    dom_name = rng.choice(sorted(SENT_DOMAINS))
    dom = SENT_DOMAINS[dom_name]
    positive = rng.random() < 0.5
    kind = None
    if dom_name == "product":
        kind = rng.choice(dom["aspects"][0][0])[4:]
        subject = f"the {rng.choice(REVIEW_BRANDS)} {kind}"
    else:
        subject = REVIEW_SUBJECT[dom_name](rng)
    ctx = dict(subject=subject, kind=kind or dom["cat1"], city=rng.choice(FOOD_CITIES), weekday=rng.choice(WEEKDAYS),
               month=rng.choice(MONTHS), price=rng.randint(19, 899), nights=NUM_WORDS[rng.randint(2, 7)])

    def aspect_sentence(template: str, pol: bool) -> str:
        i, j = rng.sample(range(len(dom["aspects"])), 2)
        aspect, other = dom["aspects"][i], dom["aspects"][j]
        item = f"the {kind}" if (kind and i == 0) else rng.choice(aspect[0])
        item2 = f"the {kind}" if (kind and j == 0) else rng.choice(other[0])
        adj, adj2 = rng.sample(adjectives(aspect, pol), 2)
        if "{item2}" in template:  # a second aspect: its adjective, same polarity
            adj2 = rng.choice(adjectives(other, pol))
        return fill(rng, template, dict(ctx, item=item, adj=adj, adj2=adj2, item2=item2))

    out = [fill(rng, rng.choice(REVIEW_OPEN[positive]), ctx)]
    if rng.random() < 0.6:
        out.insert(rng.randint(0, 1), fill(rng, rng.choice(REVIEW_FACTS[dom_name]), ctx))
    for _ in range(rng.randint(2, 5)):
        t = rng.choice(REVIEW_ASPECT_SHARED) if rng.random() < 0.25 else rng.choice(REVIEW_ASPECT[positive])
        out.append(aspect_sentence(t, positive))
    if rng.random() < 0.3:
        out.insert(rng.randint(2, len(out)), aspect_sentence(REVIEW_CONTRAST[positive], not positive))
    closes = REVIEW_CLOSE[positive]
    out.append(fill(rng, rng.choice(closes[dom_name] + closes[None]), ctx))
    return out


def make_reviews(rng: Random) -> list[list[str]]:
    return [doc_reviews(rng) for _ in range(N_REVIEW_DOCS)]


ADJ_SLOTS = ("{P1}", "{N1}", "{P2}", "{N2}")


def sentiment_row(rng: Random, label: str, split: str) -> str:
    """One labelled review sentence. Adjectives come from the ``split``'s side of HELD_OUT, and a
    validation row of a polar label always uses a template with an adjective, so every such row
    asks about a word the training rows never show."""
    dom_name = rng.choice(sorted(SENT_DOMAINS))
    dom = SENT_DOMAINS[dom_name]
    a1, a2 = rng.sample(dom["aspects"], 2)
    i1 = rng.choice(a1[0])
    i2 = rng.choice(a2[0])
    ctx = dict(
        I1=i1, I2=i2, P1=rng.choice(adjectives(a1, True, split)), N1=rng.choice(adjectives(a1, False, split)),
        P2=rng.choice(adjectives(a2, True, split)), N2=rng.choice(adjectives(a2, False, split)),
        place=rng.choice(dom["place"]), cat=dom["cat"], cat1=dom["cat1"],
        had=dom["had"], ing=dom["ing"], again=dom["again"], never=dom["never"], happy=dom["happy"],
        dish=rng.choice(DISHES)["name"], city=rng.choice(FOOD_CITIES), rest=rng.choice(RESTAURANTS),
        hour=rng.randint(7, 11) if dom_name == "restaurant" else rng.randint(2, 4), weekday=rng.choice(WEEKDAYS),
        n=rng.randrange(20, 160, 2), product=rng.choice(SENT_DOMAINS["product"]["aspects"][0][0])[4:],
        month=rng.choice(MONTHS), price=rng.randint(19, 899), kg=dec(rng, 0.4, 3.5), weeks=count(rng.randint(2, 12), "week", "weeks"),
        mins=rng.randint(88, 170), name=person(rng)[0], title=rng.choice(FILM_TITLES),
        k=NUM_WORDS[rng.randint(2, 7)], walk=rng.choice(["five", "ten", "15", "20"]), hotel=rng.choice(HOTELS),
    )
    if label == "neutral" and rng.random() < 0.55:
        template = rng.choice(NEUTRAL_FACTS[dom_name])
    else:
        templates = SENT_TEMPLATES[label]
        if split == "validation" and label != "neutral":
            templates = [t for t in templates if any(slot in t for slot in ADJ_SLOTS)]
        template = rng.choice(templates)
    return fill(rng, template, ctx)


def make_sentiment(rng: Random) -> dict[str, list[tuple[str, str]]]:
    """600 training and 150 validation rows, 15% neutral and the rest split evenly, per split."""
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        total = N_SENTIMENT[split]
        n_neutral = round(total * 0.15)
        n_pos = (total - n_neutral) // 2
        wanted = {"negative": total - n_neutral - n_pos, "neutral": n_neutral, "positive": n_pos}
        rows = []
        for label in ("negative", "neutral", "positive"):
            n = 0
            while n < wanted[label]:
                text = sentiment_row(rng, label, split)
                if text not in seen:
                    seen.add(text)
                    rows.append((text, label))
                    n += 1
        rng.shuffle(rows)
        splits[split] = rows
    return splits


# ---------------------------------------------------------------------------
# Paraphrase (sentence1, sentence2, label)
# ---------------------------------------------------------------------------
# Each generator returns (fact, templates, perturb): templates(fact) gives a
# list of templates that all state the fact; perturb(rng, fact) returns a
# related fact that differs in one detail (number, date, role, polarity).


def other(rng: Random, options, current):
    return rng.choice([o for o in options if o != current])


def pg_match(rng):
    sp = rng.choice(SPORTS)
    (w, _), (l, _) = team_names(rng, 2)
    hs, ls = game_score(rng, sp)
    if hs == ls:
        hs += 1
    fact = dict(W=w, L=l, hs=hs, ls=ls, day=rng.choice(WEEKDAYS), sp=sp)
    t = ["The {W} [beat|defeated] the {L} {hs}-{ls} on {day}.",
         "The {L} lost {hs}-{ls} to the {W} on {day}.",
         "On {day}, the {L} were [beaten|defeated] {hs}-{ls} by the {W}.",
         "The {W} [earned|recorded] a {hs}-{ls} [win|victory] over the {L} on {day}.",
         "On {day}, the {W} [beat|defeated] the {L} by a score of {hs}-{ls}."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["swap", "score", "day"])
        if kind == "swap":
            f["W"], f["L"] = f["L"], f["W"]
        elif kind == "score":
            old = (f["hs"], f["ls"])
            while (f["hs"], f["ls"]) == old or f["hs"] == f["ls"]:
                f["hs"], f["ls"] = game_score(rng, f["sp"])
        else:
            f["day"] = other(rng, WEEKDAYS, f["day"])
        return f

    return fact, lambda f: t, perturb


def pg_earnings(rng):
    metrics = ["revenue", "profit", "sales", "net income"]

    def derive(f):
        f["rose"] = "[rose|increased|climbed|grew]" if f["up"] else "[fell|declined|dropped]"
        f["rise_n"] = "[rise|increase|gain]" if f["up"] else "[drop|decline|fall]"
        return f

    fact = derive(dict(C=rng.choice(COMPANY_PREFIXES), metric=rng.choice(metrics), up=rng.random() < 0.6,
                       pct=dec(rng, 1, 20), q=rng.choice(QUARTERS)))
    t = ["{C} said its {q}-quarter {metric} {rose} {pct} percent.",
         "{C} reported a {pct} percent {rise_n} in {metric} for the {q} quarter.",
         "In the {q} quarter, {metric} at {C} {rose} by {pct} percent, the company said.",
         "{metric} at {C} {rose} {pct} percent in the {q} quarter, according to the company."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["pct", "dir", "quarter", "metric"])
        if kind == "pct":
            old = f["pct"]
            while f["pct"] == old:
                f["pct"] = dec(rng, 1, 20)
        elif kind == "dir":
            f["up"] = not f["up"]
        elif kind == "quarter":
            f["q"] = other(rng, QUARTERS, f["q"])
        else:
            f["metric"] = other(rng, metrics, f["metric"])
        return derive(f)

    return fact, lambda f: t, perturb


def pg_precip(rng):
    city, _, events = rng.choice([c for c in WEATHER_CITIES if "s" in c[2]])

    def amount(kind):
        return dec(rng, 8, 95) if kind == "rain" else str(rng.randint(5, 60))

    kind = rng.choice(["rain", "snow"])
    fact = dict(city=city, kind=kind, amt=amount(kind), day=rng.choice(WEEKDAYS))
    t = ["{city} received {amt} {unit} of {kind} on {day}.",
         "On {day}, {amt} {unit} of {kind} fell in {city}.",
         "{kind} totals in {city} reached {amt} {unit} on {day}.",
         "A total of {amt} {unit} of {kind} was recorded in {city} on {day}."]

    def derive(f):
        f["unit"] = "millimeters" if f["kind"] == "rain" else "centimeters"
        return f

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["amt", "amt", "day", "kind"])
        if kind == "amt":
            old = f["amt"]
            while f["amt"] == old:
                f["amt"] = amount(f["kind"])
        elif kind == "day":
            f["day"] = other(rng, WEEKDAYS, f["day"])
        else:
            f["kind"] = "snow" if f["kind"] == "rain" else "rain"
        return derive(f)

    return derive(fact), lambda f: t, perturb


def pg_temperature(rng):
    city = rng.choice([c for c in WEATHER_CITIES if "h" in c[2]])[0]
    fact = dict(city=city, t=dec(rng, 31, 44), day=rng.choice(WEEKDAYS))
    t = ["Temperatures in {city} reached {t} degrees Celsius on {day}.",
         "{city} recorded a high of {t} degrees Celsius on {day}.",
         "On {day}, the temperature in {city} climbed to {t} degrees Celsius.",
         "The thermometer in {city} hit {t} degrees Celsius on {day}."]

    def perturb(rng, f):
        f = dict(f)
        if rng.random() < 0.7:
            old = f["t"]
            while f["t"] == old:
                f["t"] = dec(rng, 31, 44)
        else:
            f["day"] = other(rng, WEEKDAYS, f["day"])
        return f

    return fact, lambda f: t, perturb


def pg_species(rng):
    sing, plur, _ = rng.choice(SPECIES)

    def derive(f):
        f["fell"] = "[fell|declined|dropped]" if f["down"] else "[rose|increased|grew]"
        f["decline"] = "[decline|drop|fall]" if f["down"] else "[rise|increase]"
        return f

    fact = derive(dict(lead=person(rng)[0], univ=rng.choice(UNIVERSITIES), species=sing, species_pl=plur,
                       pct=str(rng.randint(8, 60)), years=str(rng.randint(5, 30)), down=rng.random() < 0.75))
    t = ["A study led by Dr. {lead} at {univ} found that {species} populations {fell} by {pct} percent over {years} years.",
         "Researchers at {univ}, led by Dr. {lead}, found a {pct} percent {decline} in {species} populations over {years} years.",
         "{species} populations {fell} {pct} percent over {years} years, according to a study by Dr. {lead} of {univ}.",
         "Over {years} years, the number of {species_pl} {fell} by {pct} percent, a team at {univ} led by Dr. {lead} found."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["pct", "years", "dir", "univ"])
        if kind == "pct":
            old = f["pct"]
            while f["pct"] == old:
                f["pct"] = str(rng.randint(8, 60))
        elif kind == "years":
            old = f["years"]
            while f["years"] == old:
                f["years"] = str(rng.randint(5, 30))
        elif kind == "dir":
            f["down"] = not f["down"]
        else:
            f["univ"] = other(rng, UNIVERSITIES, f["univ"])
        return derive(f)

    return fact, lambda f: t, perturb


TREATMENTS = ["regular exercise", "a short afternoon nap", "a daily walk", "drinking green tea",
              "a diet rich in fiber", "swimming in cold water", "a Mediterranean diet", "yoga"]
OUTCOMES = [("improve", "memory in older adults"), ("improve", "concentration in students"),
            ("lower", "blood pressure in older adults"), ("reduce", "the risk of heart disease"),
            ("lower", "cholesterol levels"), ("improve", "sleep quality"), ("delay", "memory loss"),
            ("reduce", "the risk of diabetes")]
VERB_FORMS = {"improve": ("[improves|boosts]", "[improve|boost]"),
              "lower": ("[lowers|reduces]", "[lower|reduce]"),
              "reduce": ("[reduces|lowers]", "[reduce|lower]"),
              "delay": ("[delays|slows]", "[delay|slow]")}


def pg_finding(rng):
    def derive(f):
        f["v3"], f["v0"] = VERB_FORMS[f["verb"]]
        return f

    treat = rng.choice(TREATMENTS)
    verb, outcome = rng.choice(OUTCOMES)
    fact = derive(dict(univ=rng.choice(UNIVERSITIES), treat=treat, verb=verb, outcome=outcome,
                       pos=rng.random() < 0.5))
    pos = ["A study at {univ} found that {treat} {v3} {outcome}.",
           "According to researchers at {univ}, {treat} {v3} {outcome}.",
           "{treat} {v3} {outcome}, a study at {univ} has found.",
           "Researchers at {univ} have shown that {treat} {v3} {outcome}."]
    neg = ["A study at {univ} found no evidence that {treat} {v3} {outcome}.",
           "According to researchers at {univ}, {treat} does not {v0} {outcome}.",
           "{treat} does not {v0} {outcome}, a study at {univ} has found.",
           "Researchers at {univ} have shown that {treat} does not {v0} {outcome}."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["pol", "pol", "outcome", "treat", "univ"])
        if kind == "pol":
            f["pos"] = not f["pos"]
        elif kind == "outcome":
            f["verb"], f["outcome"] = other(rng, OUTCOMES, (f["verb"], f["outcome"]))
        elif kind == "treat":
            f["treat"] = other(rng, TREATMENTS, f["treat"])
        else:
            f["univ"] = other(rng, UNIVERSITIES, f["univ"])
        return derive(f)

    return fact, lambda f: pos if f["pos"] else neg, perturb


def pg_prep(rng):
    fact = dict(chef=person(rng)[0], dish=rng.choice(DISHES)["name"], rest=rng.choice(RESTAURANTS),
                n=str(rng.randrange(10, 95, 5)))
    t = ["Chef {chef} prepares the {dish} at {rest} in about {n} minutes.",
         "At {rest}, the {dish} is prepared by chef {chef} in about {n} minutes.",
         "It takes chef {chef} about {n} minutes to prepare the {dish} at {rest}.",
         "The {dish} at {rest} takes chef {chef} about {n} minutes to make."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["n", "n", "dish", "chef"])
        if kind == "n":
            old = f["n"]
            while f["n"] == old:
                f["n"] = str(rng.randrange(10, 95, 5))
        elif kind == "dish":
            f["dish"] = other(rng, [d["name"] for d in DISHES], f["dish"])
        else:
            f["chef"] = person(rng)[0]
        return f

    return fact, lambda f: t, perturb


def pg_recipe(rng):
    d = rng.choice(DISHES)
    ings = [x for x in d["ings"] if not x.startswith("egg")]  # eggs are counted, not weighed
    fact = dict(dish=d["name"], ing=rng.choice(ings), g=str(rng.randrange(50, 900, 25)), ings=ings)
    t = ["The recipe for {dish} calls for {g} grams of {ing}.",
         "You need {g} grams of {ing} to make {dish}.",
         "To make {dish}, the recipe uses {g} grams of {ing}.",
         "{dish} is made with {g} grams of {ing}, according to the recipe."]

    def perturb(rng, f):
        f = dict(f)
        if rng.random() < 0.7:
            old = f["g"]
            while f["g"] == old:
                f["g"] = str(rng.randrange(50, 900, 25))
        else:
            f["ing"] = other(rng, f["ings"], f["ing"])
        return f

    return fact, lambda f: t, perturb


def pg_flights(rng):
    a, b = rng.sample([d["city"] for d in DESTINATIONS] + HUBS, 2)
    fact = dict(airline=rng.choice(AIRLINES), A=a, B=b, freq=rng.choice(["daily", "weekly"]),
                month=rng.choice(MONTHS))
    t = ["{airline} will [launch|start] {freq} flights from {A} to {B} in {month}.",
         "Starting in {month}, {airline} will fly {freq} from {A} to {B}.",
         "{freq} flights from {A} to {B} will be [launched|introduced] by {airline} in {month}.",
         "In {month}, {airline} plans to begin {freq} service from {A} to {B}."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["freq", "month", "swap"])
        if kind == "freq":
            f["freq"] = "weekly" if f["freq"] == "daily" else "daily"
        elif kind == "month":
            f["month"] = other(rng, MONTHS, f["month"])
        else:
            f["A"], f["B"] = f["B"], f["A"]
        return f

    return fact, lambda f: t, perturb


def pg_hotel(rng):
    fact = dict(hotel=rng.choice(HOTELS), city=rng.choice(DESTINATIONS)["city"],
                p=str(rng.randrange(60, 400, 5)), room=rng.choice(["double", "single"]))
    t = ["A {room} room at {hotel} in {city} costs about ${p} a night.",
         "At {hotel} in {city}, a {room} room costs roughly ${p} per night.",
         "Staying in a {room} room at {hotel} in {city} costs around ${p} a night.",
         "{hotel} in {city} charges about ${p} a night for a {room} room."]

    def perturb(rng, f):
        f = dict(f)
        if rng.random() < 0.7:
            old = f["p"]
            while f["p"] == old:
                f["p"] = str(rng.randrange(60, 400, 5))
        else:
            f["room"] = "single" if f["room"] == "double" else "double"
        return f

    return fact, lambda f: t, perturb


ROLES = ["chief executive", "chief financial officer", "chair of the board", "head of research"]


def pg_appointment(rng):
    fact = dict(C=company(rng)[0], P=person(rng)[0], role=rng.choice(ROLES), day=rng.choice(WEEKDAYS))
    t = ["{C} named {P} as its new {role} on {day}.",
         "{P} was appointed {role} of {C} on {day}.",
         "On {day}, {C} [announced|said] that {P} would become its new {role}.",
         "{C} [appointed|hired] {P} as {role} on {day}."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["role", "day", "person"])
        if kind == "role":
            f["role"] = other(rng, ROLES, f["role"])
        elif kind == "day":
            f["day"] = other(rng, WEEKDAYS, f["day"])
        else:
            f["P"] = other(rng, [person(rng)[0] for _ in range(3)], f["P"])
        return f

    return fact, lambda f: t, perturb


def pg_injury(rng):
    (rival, _), = team_names(rng, 1)
    fact = dict(P=person(rng)[0], R=rival, day=rng.choice(WEEKDAYS), out=rng.random() < 0.5)
    out = ["{P} will miss the game against the {R} on {day} because of an injury.",
           "An injury will keep {P} out of the game against the {R} on {day}.",
           "{P} has been ruled out of {day}'s game against the {R} with an injury.",
           "Because of an injury, {P} will not play against the {R} on {day}."]
    play = ["{P} will play in the game against the {R} on {day} despite an injury.",
            "An injury will not keep {P} out of the game against the {R} on {day}.",
            "{P} has been cleared to play in {day}'s game against the {R} despite an injury.",
            "Despite an injury, {P} will play against the {R} on {day}."]

    def perturb(rng, f):
        f = dict(f)
        kind = rng.choice(["out", "out", "day"])
        if kind == "out":
            f["out"] = not f["out"]
        else:
            f["day"] = other(rng, WEEKDAYS, f["day"])
        return f

    return fact, lambda f: out if f["out"] else play, perturb


def pg_premiere(rng):
    fact = dict(title=rng.choice(FILM_TITLES), D=person(rng)[0], F=rng.choice(FESTIVALS), day=rng.choice(WEEKDAYS))
    t = ["{title}, directed by {D}, premiered at the {F} on {day}.",
         "The {F} hosted the premiere of {D}'s film {title} on {day}.",
         "{D}'s new film, {title}, had its premiere at the {F} on {day}.",
         "On {day}, {title}, the new film from director {D}, premiered at the {F}."]

    def perturb(rng, f):
        f = dict(f)
        if rng.random() < 0.5:
            f["day"] = other(rng, WEEKDAYS, f["day"])
        else:
            f["F"] = other(rng, FESTIVALS, f["F"])
        return f

    return fact, lambda f: t, perturb


PARA_GENERATORS = [pg_match, pg_earnings, pg_precip, pg_temperature, pg_species, pg_finding, pg_prep,
                   pg_recipe, pg_flights, pg_hotel, pg_appointment, pg_injury, pg_premiere]


def paraphrase_pair(rng: Random, label: int) -> tuple[str, str]:
    while True:
        fact, templates, perturb = rng.choice(PARA_GENERATORS)(rng)
        ts = templates(fact)
        i = rng.randrange(len(ts))
        s1 = fill(rng, ts[i], fact)
        if label == 1:
            f2 = fact
            j = i if rng.random() < 0.25 else rng.choice([k for k in range(len(ts)) if k != i])
        else:
            f2 = perturb(rng, fact)
            j = i if rng.random() < 0.5 else rng.randrange(len(ts))
        s2 = fill(rng, templates(f2)[j], f2)
        if s1 != s2:
            return s1, s2


def make_paraphrase(rng: Random) -> dict[str, list[tuple[str, str, int]]]:
    total = sum(N_PARAPHRASE.values())
    seen: set[str] = set()
    by_label: dict[int, list[tuple[str, str]]] = {0: [], 1: []}
    for label in (1, 0):
        while len(by_label[label]) < total // 2:
            s1, s2 = paraphrase_pair(rng, label)
            if s1 not in seen and s2 not in seen:
                seen.update((s1, s2))
                by_label[label].append((s1, s2))
    frac = N_PARAPHRASE["validation"] / total
    splits: dict[str, list[tuple[str, str, int]]] = {"train": [], "validation": []}
    for label, pairs in by_label.items():
        n_val = round(len(pairs) * frac)
        splits["validation"] += [(a, b, label) for a, b in pairs[:n_val]]
        splits["train"] += [(a, b, label) for a, b in pairs[n_val:]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write(path: Path, text: str, written: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(data)
    written[path] = len(data)


def readme(stats: dict) -> str:
    s = stats
    lines = [
        "# Bundled data",
        "",
        "Small synthetic data sets for trying the `mlm_pretrain` pipeline end to end:",
        "a pretraining corpus and two labelled fine-tuning tasks. Every file here is",
        "written by `python scripts/make_data.py` (standard library only, seeded: the news",
        "and encyclopedic documents, `corpus_running.jsonl` and the paraphrase pairs come",
        "from `random.Random(0)`, the review documents from `random.Random(1)` and the",
        "sentiment rows from `random.Random(2)`); the script is deterministic, so rerunning",
        "it reproduces byte-identical files (checked with Python 3.11). Edit the script,",
        "not the files.",
        "",
        "The text is original and synthetic: sentences are produced from templates, word",
        "lists and small sentence grammars written in the script. People, teams,",
        "companies, products, films, festivals and all numbers are invented; real place",
        "names appear only as settings. Do not treat any of it as fact. It is meant to",
        "exercise the whole pipeline in minutes, not to produce a useful model.",
        "",
        "**What it is designed to show.** Pretraining pays when it teaches words and",
        "constructions that the small labelled set does not cover. So about half of the",
        "sentiment adjectives (the held-out words listed under `sentiment/`) never occur in",
        "a labelled training row, and every positive or negative validation row uses one of",
        "them; the corpus uses all of them in reviews whose tone gives their polarity away.",
        "A classifier trained from scratch, or TF-IDF, has never seen a held-out word",
        "labelled and can only lean on the rest of the sentence; an encoder pretrained on",
        "`corpus.txt` has seen each of them beside adjectives of the same polarity. Whether",
        "a given run gets there depends on its pretraining budget: the run's report puts",
        "the pretrained classifier beside random initialisation and TF-IDF on these rows.",
        "",
        "All files are UTF-8 with `\\n` line endings.",
        "",
        "| File | Contents | Size (bytes) |",
        "| --- | --- | ---: |",
    ]
    for rel, desc in s["table"]:
        lines.append(f"| `{rel}` | {desc} | {s['sizes'][rel]:,} |")
    lines += [
        "",
        "## `corpus.txt`: pretraining corpus",
        "",
        "Google BERT `create_pretraining_data.py` format: one sentence per line, one",
        "blank line between documents, a single newline at the end of the file.",
        f"It has {s['docs']} documents, {s['sentences']:,} sentences and {s['words']:,} whitespace-separated words;",
        f"documents have {s['min_sent']} to {s['max_sent']} sentences (mean {s['mean_sent']:.1f}).",
        "",
        f"{s['docs'] - s['topics']['reviews']} documents are news-style or encyclopedic and",
        f"{s['topics']['reviews']} are reviews; the two kinds are interleaved.",
        "",
        "Each news-style or encyclopedic document is a short piece about one subject",
        "(a team, a company, a city, a dish, a study, a film) that recurs through the",
        "document: an opening sentence introduces it, the middle gives details",
        "(numbers, dates, quotes) in a fixed logical order, and a closing sentence looks",
        "ahead, so sentence order carries signal for next-sentence prediction.",
        "These documents are shuffled, so neighbours are usually about different topics.",
        "Documents per topic: " + ", ".join(f"{k} {v}" for k, v in s["topics"].items()) + ".",
        "",
        "The text deliberately includes things a sentence splitter and normalizer have",
        "to handle: abbreviations inside and at the end of sentences (`Dr.`, `U.S.`,",
        "`Inc.`, `Corp.`, `Ltd.`, `e.g.`, `a.m.`, `p.m.`, `Jan.`), decimal numbers and",
        "money (`3.5 percent`, `$4.2 billion`), quoted speech, apostrophes, and accented",
        "words (`café`, `naïve`, `crème brûlée`, `São Paulo`, `Zürich`).",
        "",
        "Each review document (topic `reviews`) is a first-person review of a",
        "restaurant, a product, a film or a hotel (the sentiment task's four domains)",
        "with one overall tone, positive or negative (half each): an opening that",
        "states it (\"I loved ...\", \"What a letdown ... turned out to be\"), two to",
        "five sentences that give aspects (food, service, battery, plot, staff, ...)",
        "adjectives of that tone, sometimes one fact (when, where, the price) and in",
        "some reviews one contrasting aspect marked as such (\"The only letdown was",
        "...\"), and a closing (\"I would go back tomorrow.\", \"I returned it after a",
        "week.\", \"A waste of money.\"). Every adjective of the sentiment task's word",
        "lists occurs in them, held-out words included. Their sentence frames are the",
        "corpus's own, not those of the labelled rows; a few frames (\"Even ... was",
        "...\") are shared by both tones, so that only the rest of the review tells",
        "the polarity.",
        "",
        "## `corpus_running.jsonl`: the same text as running prose",
        "",
        f"{s['running']} JSON Lines records `{{\"id\": int, \"text\": str}}`. `id` is the 0-based",
        "index of the document in `corpus.txt`, and `text` is that document's sentences",
        "joined with single spaces, split into paragraphs of one to three sentences and",
        "hard-wrapped at 70 columns, newswire style (Reuters-21578): lines end in `\\n`",
        "and every paragraph after the first starts with `\\n` plus four spaces. Wrapping",
        "never breaks words, so collapsing whitespace gives back the sentences joined",
        "by spaces exactly: the lines of `corpus.txt` are the reference sentence",
        "boundaries for testing a sentence splitter on this input.",
        "",
        "## `sentiment/`: single-sentence classification",
        "",
        "`train.csv` and `validation.csv`, columns `text,label`, written with Python's",
        "`csv` module (minimal quoting, header row). `label` is one of the strings",
        "`negative`, `neutral`, `positive`. Sentences are short reviews of restaurants,",
        "products, films and hotels. Most are plain, but some use negation (\"not bad at",
        "all\", \"hardly great\") or mix praise and complaint, and neutral rows include",
        "hedged opinions (\"not great, not terrible\"), so a bag-of-words model does",
        "well but not perfectly. No text appears twice across the two files.",
        "",
        "**Held-out words.** Each aspect's list of positive and of negative",
        "adjectives is split in two: training rows use only the first part, and",
        "validation rows only the second (the held-out words). Every positive or",
        "negative validation row is written with a template that has an adjective",
        "slot, so it contains at least one held-out word; many of these rows also carry",
        "cue words that training rows teach (\"loved\", \"a complete waste of money\",",
        "\"hardly\"), and the plain ones (\"The terrace was charming.\", \"Nothing about",
        "the staff was unhelpful.\") can only be decided from the adjective. Neutral",
        "validation rows that mention adjectives use held-out words too. The",
        f"{len(s['held_out'])} held-out words, all of which occur in the review documents of `corpus.txt`:",
        "",
        "- positive: " + ", ".join(sorted(w for w in s["held_out"] if s["held_out"][w])),
        "- negative: " + ", ".join(sorted(w for w in s["held_out"] if not s["held_out"][w])),
        "",
        "Their counts in `corpus.txt` range from "
        f"{min(s['held_out_counts'].values())} to {max(s['held_out_counts'].values())}.",
        "",
        "| Split | Rows | negative | neutral | positive |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for split in ("train", "validation"):
        c = s["sentiment"][split]
        lines.append(f"| {split} | {sum(c.values())} | {c['negative']} | {c['neutral']} | {c['positive']} |")
    lines += [
        "",
        "## `paraphrase/`: sentence-pair classification",
        "",
        "`train.csv` and `validation.csv`, columns `sentence1,sentence2,label`, written",
        "with Python's `csv` module. `label` is the integer `1` when `sentence2`",
        "restates the facts of `sentence1` in other words (synonyms, active/passive,",
        "clauses reordered) and `0` when it is a related statement about the same",
        "subject that differs in one detail: a number, a day or month, who won, a",
        "name, a role, a direction (rose/fell, from/to) or a negation. Some pairs of",
        "both kinds reuse the same sentence frame, so word overlap alone does not",
        "decide the label. No sentence appears in more than one pair.",
        "",
        "Both labelled sets draw on the corpus's word lists (teams, companies, dishes,",
        "restaurants, hotels, films, places, and the review adjectives that corpus",
        "documents also use), so pretraining on `corpus.txt` is relevant to them. The",
        "paraphrase pairs are made as before; they changed when the sentiment rows got",
        "their own random stream.",
        "",
        "| Split | Rows | label 0 | label 1 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for split in ("train", "validation"):
        c = s["paraphrase"][split]
        lines.append(f"| {split} | {c[0] + c[1]} | {c[0]} | {c[1]} |")
    lines += [
        "",
        "## Regenerating",
        "",
        "```",
        "python scripts/make_data.py            # rewrites data/ in place",
        "python scripts/make_data.py --out DIR  # writes the same files under DIR",
        "```",
        "",
        "## Licence",
        "",
        "Apache-2.0, the same licence as the rest of the project; the generator and",
        "its output are both covered.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data",
                    help="output directory (default: data/ in the repository)")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    out: Path = args.out
    check_held_out()
    # One stream per part, so that changing one part leaves the others' bytes alone: the 400
    # news/encyclopedic documents and corpus_running.jsonl come from Random(SEED) as they always
    # did; the review documents, their places in the corpus and the sentiment rows have their own.
    rng = Random(SEED)
    review_rng = Random(SEED + 1)
    sentiment_rng = Random(SEED + 2)

    news = make_corpus(rng)
    reviews = [("reviews", d) for d in make_reviews(review_rng)]
    # Reviews are spread through the corpus; the other documents keep their relative order.
    n_all = len(news) + len(reviews)
    review_at = set(review_rng.sample(range(n_all), len(reviews)))
    news_it, reviews_it = iter(news), iter(reviews)
    corpus = [next(reviews_it) if i in review_at else next(news_it) for i in range(n_all)]
    news_index = [i for i in range(n_all) if i not in review_at]  # old index -> index in corpus.txt
    docs = [sents for _, sents in corpus]
    corpus_txt = "\n\n".join("\n".join(d) for d in docs) + "\n"

    running_ids = sorted(rng.sample(range(len(news)), N_RUNNING))
    running = "".join(json.dumps({"id": news_index[i], "text": running_text(rng, news[i][1])}, ensure_ascii=False)
                      + "\n" for i in running_ids)
    running_ids = [news_index[i] for i in running_ids]

    sentiment = make_sentiment(sentiment_rng)
    paraphrase = make_paraphrase(rng)

    files = {
        "corpus.txt": corpus_txt,
        "corpus_running.jsonl": running,
        "sentiment/train.csv": csv_text(["text", "label"], sentiment["train"]),
        "sentiment/validation.csv": csv_text(["text", "label"], sentiment["validation"]),
        "paraphrase/train.csv": csv_text(["sentence1", "sentence2", "label"], paraphrase["train"]),
        "paraphrase/validation.csv": csv_text(["sentence1", "sentence2", "label"], paraphrase["validation"]),
    }
    written: dict[Path, int] = {}
    for rel, text in files.items():
        write(out / rel, text, written)

    n_sent = [len(d) for d in docs]
    topics: dict[str, int] = {}
    for name, _ in TOPICS + [("reviews", None)]:
        topics[name] = sum(1 for t, _ in corpus if t == name)
    stats = dict(
        docs=len(docs), sentences=sum(n_sent), words=len(corpus_txt.split()),
        min_sent=min(n_sent), max_sent=max(n_sent), mean_sent=sum(n_sent) / len(n_sent),
        topics=topics, running=len(running_ids),
        held_out={w: any(w in a[1] for d in SENT_DOMAINS.values() for a in d["aspects"]) for w in HELD_OUT},
        held_out_counts={w: len(re.findall(r"(?<![\w-])" + re.escape(w) + r"(?![\w-])", corpus_txt, re.IGNORECASE))
                         for w in HELD_OUT},
        sizes={rel: len(text.encode("utf-8")) for rel, text in files.items()},
        sentiment={k: {lab: sum(1 for _, l in v if l == lab) for lab in ("negative", "neutral", "positive")}
                   for k, v in sentiment.items()},
        paraphrase={k: {lab: sum(1 for *_, l in v if l == lab) for lab in (0, 1)} for k, v in paraphrase.items()},
        table=[
            ("corpus.txt", f"{len(docs):,} documents, {sum(n_sent):,} sentences"),
            ("corpus_running.jsonl", f"{len(running_ids)} of those documents as wrapped running text"),
            ("sentiment/train.csv", f"{len(sentiment['train'])} labelled sentences"),
            ("sentiment/validation.csv", f"{len(sentiment['validation'])} labelled sentences"),
            ("paraphrase/train.csv", f"{len(paraphrase['train'])} labelled sentence pairs"),
            ("paraphrase/validation.csv", f"{len(paraphrase['validation'])} labelled sentence pairs"),
        ],
    )
    write(out / "README.md", readme(stats), written)

    for path, size in written.items():
        print(f"{size:>9,}  {path}")
    print(f"{sum(written.values()):>9,}  total bytes")


if __name__ == "__main__":
    main()

"""Time-zone labels that statements print per row ("PST", "CET", "Europe/Berlin").

An IANA name is used as is, with its daylight-saving rules. An abbreviation names a fixed
offset (PDT is UTC-7 on any date): exporters print the abbreviation that applied when the
row was written, so the label is the truth for that row. Ambiguous abbreviations (CST, IST,
...) are refused rather than guessed.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.sources.base import ParseError

# abbreviation -> fixed-offset zone (POSIX "Etc/GMT+8" is UTC-8)
ABBREVIATIONS = {
    "UTC": "UTC", "GMT": "UTC", "Z": "UTC", "WET": "UTC",
    "PST": "Etc/GMT+8", "PDT": "Etc/GMT+7", "MST": "Etc/GMT+7", "MDT": "Etc/GMT+6",
    "CDT": "Etc/GMT+5", "EST": "Etc/GMT+5", "EDT": "Etc/GMT+4",
    "WEST": "Etc/GMT-1", "BST": "Etc/GMT-1", "CET": "Etc/GMT-1", "CEST": "Etc/GMT-2",
    "EET": "Etc/GMT-2", "EEST": "Etc/GMT-3", "MSK": "Etc/GMT-3",
    "HKT": "Etc/GMT-8", "SGT": "Etc/GMT-8", "JST": "Etc/GMT-9", "KST": "Etc/GMT-9",
    "AEST": "Etc/GMT-10", "AEDT": "Etc/GMT-11",
}


def resolve(label: str) -> str | None:
    label = label.strip()
    if label.upper() in ABBREVIATIONS:
        return ABBREVIATIONS[label.upper()]
    if "/" in label:
        try:
            ZoneInfo(label)
        except (ZoneInfoNotFoundError, ValueError):
            return None
        return label
    return None


def zone_sql(con, path, column: str, table: str = "raw") -> str:
    """A SQL expression giving each row's IANA zone from its label column.

    Only the distinct labels are looked at in Python (a handful per file); an unknown label
    raises ParseError naming its first line.
    """
    labels = [r[0] for r in con.execute(f'SELECT DISTINCT clean_text("{column}") FROM {table}').fetchall()]
    arms = []
    for label in sorted(lab for lab in labels if lab is not None):
        zone = resolve(label)
        if zone is None:
            line = con.execute(f'SELECT min(line) FROM {table} WHERE clean_text("{column}") = ?', [label]).fetchone()[0]
            raise ParseError(path, "unknown time zone (expected an IANA name or an unambiguous abbreviation "
                             "such as PST, PDT, CET, CEST, UTC)", line=line, field=column, value=label)
        arms.append(f"WHEN '{label.replace(chr(39), chr(39) * 2)}' THEN '{zone}'")
    if not arms:
        return "CAST(NULL AS VARCHAR)"
    return f'(CASE clean_text("{column}") {" ".join(arms)} END)'

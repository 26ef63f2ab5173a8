from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ingest.feeds import CANONICAL_COLUMNS, BarFeed, FeedError, FileFeed, SyntheticFeed, paced
from ingest.synthetic import generate_bars
from ingest.validation import MALFORMED, RAW_TEXT

COLUMNS = list(CANONICAL_COLUMNS)

# Values a validator must see verbatim: padded numbers, an empty cell, a non-number, an odd ts.
RAW_ROWS = [
    ["2024-01-02 14:30:00", "AAA", "10.50", "10.70", "10.40", "10.60", "1200"],
    ["2024-01-02 14:30:00", "BBB", "020.0", "21", "19.9", "", "300"],
    ["2024-01-02T14:31:00Z", "AAA", "10.60", "10.80", "10.55", "n/a", "1e3"],
    ["not a time", "BBB", "20.1", "20.4", "20.0", "20.2", "-5"],
]


def write(path: Path, header: list[str], rows: list[list[str]] = RAW_ROWS) -> Path:
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    if path.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(path, row_group_size=2)
    else:
        frame.to_csv(path, index=False)
    return path


def read_all(feed: FileFeed) -> pd.DataFrame:
    return pd.concat(feed.batches(), ignore_index=True)


def expected(rows: list[list[str]] = RAW_ROWS) -> pd.DataFrame:
    source = ["ts", "symbol", "open", "high", "low", "close", "volume"]
    return pd.DataFrame(rows, columns=source, dtype=str)[COLUMNS]


HEADERS = {
    "canonical": ["ts", "symbol", "open", "high", "low", "close", "volume"],
    "long names": ["Timestamp", "Ticker", "Open", "High", "Low", "Close", "Volume"],
    "short names": ["TIME", "instrument", "o", "h", "l", "c", "v"],
    "price and vol": ["bar_ts", "SYMBOL", "open", "high", "low", "price", "vol"],
}


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.parquet", "BARS.PQ"])
@pytest.mark.parametrize("header", HEADERS.values(), ids=HEADERS.keys())
def test_aliases_resolve_and_values_are_kept(tmp_path: Path, name: str, header: list[str]) -> None:
    feed = FileFeed(write(tmp_path / name, header), chunk_rows=3)
    assert isinstance(feed, BarFeed)
    chunks = list(feed.batches())
    assert len(chunks) == 2 and all(len(c) <= 3 for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), expected(), check_dtype=False)


def test_csv_values_are_strings_not_coerced(tmp_path: Path) -> None:
    frame = read_all(FileFeed(write(tmp_path / "bars.csv", HEADERS["canonical"])))
    assert all(isinstance(v, str) for column in COLUMNS for v in frame[column])
    assert frame.loc[1, "open"] == "020.0" and frame.loc[1, "close"] == ""
    assert frame.loc[2, "close"] == "n/a" and frame.loc[3, "ts"] == "not a time"


def test_extra_columns_dropped_and_alias_priority(tmp_path: Path) -> None:
    header = ["date", "ticker", "open", "high", "low", "price", "volume", "close", "exchange", "time"]
    rows = [["2000-01-01", *row[1:5], "999", row[6], row[5], "XNAS", row[0]] for row in RAW_ROWS]
    frame = read_all(FileFeed(write(tmp_path / "bars.csv", header, rows)))
    assert list(frame.columns) == COLUMNS
    # "close" outranks "price" and "time" outranks "date". CSV columns are object, not arrow-backed
    # strings: those cannot hold the undecodable bytes the validator must see.
    pd.testing.assert_frame_equal(frame, expected([[r[9], r[1], r[2], r[3], r[4], r[7], r[6]] for r in rows]),
                                  check_dtype=False)


@pytest.mark.parametrize("name", ["bars.csv", "bars.parquet"])
def test_column_map_overrides_aliases(tmp_path: Path, name: str) -> None:
    header = ["when", "Ticker", "first", "high", "low", "close", "volume", "price"]
    rows = [[*row, "0"] for row in RAW_ROWS]
    column_map = {"ts": "WHEN", "open": "first", "close": "price"}
    frame = read_all(FileFeed(write(tmp_path / name, header, rows), column_map=column_map))
    assert list(frame["ts"]) == [r[0] for r in RAW_ROWS]
    assert list(frame["open"]) == [r[2] for r in RAW_ROWS]
    assert list(frame["close"]) == ["0"] * len(rows)


@pytest.mark.parametrize("name", ["bars.csv", "bars.parquet"])
def test_missing_columns_are_named(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, ["when", "ticker", "open", "high", "low", "close", "qty"])
    with pytest.raises(FeedError) as error:
        FileFeed(path)
    message = str(error.value)
    assert "ts" in message and "volume" in message and "symbol" not in message.split(";")[0]
    assert "when" in message and "qty" in message  # the columns found


def test_column_map_to_absent_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "bars.csv", HEADERS["canonical"])
    with pytest.raises(FeedError, match=r"close \(mapped to 'last'\)"):
        FileFeed(path, column_map={"close": "last"})


@pytest.mark.parametrize(
    ("column_map", "match"),
    [({"px": "close"}, "not canonical"), ({"close": "open"}, "matches both")],
)
def test_bad_column_map(tmp_path: Path, column_map: dict[str, str], match: str) -> None:
    with pytest.raises(FeedError, match=match):
        FileFeed(write(tmp_path / "bars.csv", HEADERS["canonical"]), column_map=column_map)


@pytest.mark.parametrize("name", ["bars.json", "empty.csv"])
def test_unreadable_files(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    with pytest.raises(FeedError):
        FileFeed(tmp_path / name)


def test_synthetic_feed_matches_generator() -> None:
    feed = SyntheticFeed(symbols=3, days=2, seed=4)
    assert isinstance(feed, BarFeed) and feed.name == "synthetic"
    for a, b in zip(feed.batches(), generate_bars(3, 2, 4), strict=True):
        pd.testing.assert_frame_equal(a, b)


class FakeClock:
    """Time moves only when paced() sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def bars(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": s, "ts": t, "open": "1", "high": "1", "low": "1", "close": "1", "volume": "1"}
                         for t, s in rows])


@pytest.mark.parametrize(("speed", "sleeps"), [(60, [1.0, 3.0]), (1, [60.0, 180.0]), (120, [0.5, 1.5])])
def test_paced_sleeps_bar_time_over_speed(speed: float, sleeps: list[float]) -> None:
    chunk = bars(("14:30", "A"), ("14:30", "B"), ("14:31", "A"), ("14:34", "B"))
    chunk["ts"] = "2024-01-02 " + chunk["ts"]
    clock = FakeClock()
    groups = list(paced([chunk], speed, clock=clock, sleep=clock.sleep))
    assert [list(g["symbol"]) for g in groups] == [["A", "B"], ["A"], ["B"]]
    assert clock.sleeps == pytest.approx(sleeps)


def test_paced_counts_consumer_time() -> None:
    frame = next(generate_bars(2, 1, seed=0)).head(6)  # three minutes, two symbols
    clock = FakeClock()
    for _ in paced([frame], 60, clock=clock, sleep=clock.sleep):
        clock.now += 0.25  # the consumer works a quarter of a second per bar
    assert clock.sleeps == pytest.approx([0.75, 0.75])


def test_paced_regroups_across_chunks_and_sorts_within_a_chunk() -> None:
    day = "2024-01-02 "
    first = bars((day + "14:31", "A"), (day + "14:30", "A"), (day + "14:31", "B"))
    second = bars((day + "14:31", "C"), (day + "14:32", "A"))
    clock = FakeClock()
    groups = list(paced([first, second], 60, clock=clock, sleep=clock.sleep))
    assert [list(g["symbol"]) for g in groups] == [["A"], ["A", "B", "C"], ["A"]]
    assert [g["ts"].iloc[0] for g in groups] == [day + "14:30", day + "14:31", day + "14:32"]
    assert clock.sleeps == pytest.approx([1.0, 1.0])


def test_paced_keeps_unparseable_ts_with_previous_group() -> None:
    day = "2024-01-02 "
    chunks = [
        bars(("garbage", "X"), (day + "14:30", "A"), ("", "B")),
        bars(("14:99", "C"), (day + "14:31", "A"), ("nope", "D")),
    ]
    clock = FakeClock()
    groups = list(paced(chunks, 60, clock=clock, sleep=clock.sleep))
    assert [list(g["symbol"]) for g in groups] == [["X", "A", "B", "C"], ["A", "D"]]
    assert list(groups[0]["ts"]) == ["garbage", day + "14:30", "", "14:99"]  # values untouched
    assert clock.sleeps == pytest.approx([1.0])


def test_paced_without_any_parseable_ts_yields_everything() -> None:
    chunks = [bars(("x", "A")), bars(("y", "B"))]
    clock = FakeClock()
    groups = list(paced(chunks, 60, clock=clock, sleep=clock.sleep))
    assert [list(g["symbol"]) for g in groups] == [["A", "B"]]
    assert clock.sleeps == []


@pytest.mark.parametrize("speed", [0, -1, None])
def test_paced_passes_through_without_pacing(speed: float | None) -> None:
    chunks = list(generate_bars(2, 2, seed=0))
    clock = FakeClock()
    out = list(paced(chunks, speed, clock=clock, sleep=clock.sleep))
    assert len(out) == len(chunks) and all(a is b for a, b in zip(out, chunks))
    assert clock.sleeps == []


def test_paced_file_feed_end_to_end(tmp_path: Path) -> None:
    frame = pd.concat(generate_bars(3, 1, seed=2)).head(3 * 5)  # five minutes
    path = tmp_path / "bars.csv"
    frame.to_csv(path, index=False)
    clock = FakeClock()
    groups = list(paced(FileFeed(path, chunk_rows=4).batches(), 60, clock=clock, sleep=clock.sleep))
    assert [len(g) for g in groups] == [3] * 5
    assert clock.sleeps == pytest.approx([1.0] * 4)
    assert pd.concat(groups)["close"].tolist() == frame["close"].map(str).tolist()


def test_a_csv_row_with_too_few_or_too_many_cells_is_one_malformed_record(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("ts,symbol,open,high,low,close,volume\n"
                    "2024-01-02T14:30:00Z,AAA,10,11,9,10,100\n"
                    "2024-01-02T14:31:00Z,AAA,10,11\n"
                    "2024-01-02T14:32:00Z,AAA,10,11,9,10,100,7\n")
    rows = read_all(FileFeed(path)).to_dict("records")
    assert [(r.get(MALFORMED), r.get(RAW_TEXT)) for r in rows[1:]] == [
        ("bars.csv:3: 4 cells, the header has 7", "2024-01-02T14:31:00Z,AAA,10,11"),
        ("bars.csv:4: 8 cells, the header has 7", "2024-01-02T14:32:00Z,AAA,10,11,9,10,100,7")]
    assert pd.isna(rows[0].get(MALFORMED)) and rows[0]["close"] == "10"


def corrupt_first_row_group(path: Path) -> Path:
    """Overwrite the first page header of row group 0: that group no longer decodes, the file still opens."""
    import pyarrow.parquet as pq

    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset or column.data_page_offset
    data[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def test_an_unreadable_parquet_row_group_costs_its_rows_only(tmp_path: Path) -> None:
    path = corrupt_first_row_group(write(tmp_path / "bars.parquet", HEADERS["canonical"]))  # two groups of two
    records = read_all(FileFeed(path)).to_dict("records")
    assert len(records) == 3
    assert records[0][MALFORMED].startswith("bars.parquet: row group 0: 2 row(s) from row 0 unreadable (")
    assert [r["symbol"] for r in records[1:]] == ["AAA", "BBB"] and all(pd.isna(r[MALFORMED]) for r in records[1:])


@pytest.mark.parametrize("name, content", [("bars.parquet", b"garbage"), ("bars.csv.gz", b"not gzip")])
def test_a_file_that_cannot_be_opened_is_a_feed_error_naming_it(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(FeedError, match=name):
        FileFeed(tmp_path / name)

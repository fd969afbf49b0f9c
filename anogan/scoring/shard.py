"""Scoring one input in shards, and merging the shards into the output of an unsharded run.

A shard is `I/N` (0-based I): `anogan score --shard I/N` or a torchrun rank (`RANK` and
`WORLD_SIZE`; no process group is needed, ranks never talk to each other). Every shard walks
the whole input and reads every DICOM header, but decodes and scores only its own items: an
item is an image file, a NIfTI file (all its volumes), a DICOM series (never split), or a DICOM
file whose header is unreadable. An item belongs to shard `sha256(key) mod N`, where the key is
the file's path relative to the input root or the series' SeriesInstanceUID, so the shards
are disjoint and together hold exactly the items of an unsharded run.

Each shard writes a normal output folder, `OUT/shard-I-of-N/`, whose summary.json also notes
where each of its series and failures stands in the reading order of the whole input (item
number, then result number within the item). `merge_shards` puts the rows of scores.csv and
failures.csv, the series of summary.json and their numbers and file names back in that order,
copies maps/, previews/ and dicom/, and rebuilds the report: the outputs of an unsharded run.
"""

import csv
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anogan.errors import AnoganError
from anogan.export import (
    FAILURE_COLUMNS,
    SCORE_COLUMNS,
    SUMMARY_FILE,
    OutputWriter,
    read_failures,
    read_summary,
    unique_name,
)
from anogan.io.series import Series
from anogan.report.build import build_report
from anogan.scoring.series import SeriesSummary, SliceResult

logger = logging.getLogger(__name__)

SHARD_PATTERN = re.compile(r"(\d+)/(\d+)")
SHARD_FOLDER_PATTERN = "shard-*-of-*"
RANK_VARIABLE, WORLD_SIZE_VARIABLE = "RANK", "WORLD_SIZE"  # set by torchrun for every rank
COPIED_FILES = ("config.yaml",)  # copied from shard 0 into the merged folder

Position = tuple[int, int]  # (item number in reading order, result number within the item)


class ShardError(AnoganError):
    """A shard specification is malformed, or a set of shard outputs cannot be merged."""


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` of `count`, 0 <= index < count."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, origin: str = "--shard") -> "ShardSpec":
        """`I/N` as typed by a user; `origin` names where it came from in the error.

        Raises:
            ShardError: not two whole numbers, N below 1, or I not below N.
        """
        match = SHARD_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ShardError(
                f"{origin} {text!r}: not two whole numbers; expected I/N with 0 <= I < N (e.g. 0/4)"
            )
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise ShardError(
                f"{origin} {text!r}: shard {index} of {count}; expected I/N with 0 <= I < N"
            )
        return cls(index, count)

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> "ShardSpec | None":
        """The torchrun rank as a shard, or None when not under torchrun or with one rank."""
        rank, world = environment.get(RANK_VARIABLE), environment.get(WORLD_SIZE_VARIABLE)
        if rank is None or world is None:
            return None
        origin = f"environment {RANK_VARIABLE}/{WORLD_SIZE_VARIABLE}"
        spec = cls.parse(f"{rank}/{world}", origin)
        return spec if spec.count > 1 else None

    @property
    def folder_name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, key: str) -> bool:
        """Whether the item named `key` is this shard's (the same answer on every machine)."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


class ShardRecorder:
    """A scoring sink in front of an OutputWriter that keeps only this shard's items.

    Pass `select` to `iter_series` and the reader's output through `results`: each series and
    failure that reaches the writer is noted with its position in the reading order of the
    whole input, which `merge_shards` sorts on.

    Args:
        writer: the shard's output writer.
        spec: which shard this is.
    """

    def __init__(self, writer: OutputWriter, spec: ShardSpec) -> None:
        self.writer = writer
        self.spec = spec
        self.items_seen = 0
        self._position: Position = (-1, 0)
        self._open: dict[int, Position] = {}
        self._opened: list[list[Any]] = []
        self._series: list[Position] = []
        self._failures: list[Position] = []

    def select(self, key: str) -> bool:
        """The `select` of `iter_series`: counts every item offered, keeps this shard's."""
        self.items_seen += 1
        return self.spec.owns(key)

    def results(self, results: Iterable[Any]) -> Iterator[Any]:
        """The reader's results, unchanged, each noted with its position.

        NOTE: the position of a result is that of the last item offered to `select`. This holds
        because the readers offer an item just before yielding its results, and SeriesScorer
        opens, discards or fails a result before it asks for the next one.
        """
        item, number = -1, 0
        for result in results:
            number = number + 1 if self.items_seen - 1 == item else 0
            item = self.items_seen - 1
            self._position = (item, number)
            yield result

    def record(self) -> dict[str, Any]:
        """What summary.json keeps of the shard: its place and the positions of its outputs."""
        return {
            "index": self.spec.index,
            "count": self.spec.count,
            "items_seen": self.items_seen,
            "opened": self._opened,
            "series_positions": [list(position) for position in self._series],
            "failure_positions": [list(position) for position in self._failures],
        }

    # The ScoringSink protocol, passed on to the writer.

    def open_series(self, key: int, series: Series) -> None:
        self._open[key] = self._position
        self._opened.append([*self._position, series.series_id])
        self.writer.open_series(key, series)

    def write_slice(self, key: int, series: Series, result: SliceResult) -> None:
        self.writer.write_slice(key, series, result)

    def close_series(self, summary: SeriesSummary) -> None:
        self._series.append(self._open.pop(summary.key))
        self.writer.close_series(summary)

    def discard_series(self, key: int, series: Series, reason: str) -> None:
        self._open.pop(key)
        self._failures.append(self._position)
        self.writer.discard_series(key, series, reason)

    def failure(self, source: str, reason: str) -> None:
        self._failures.append(self._position)
        self.writer.failure(source, reason)


@dataclass(frozen=True)
class _Shard:
    """One shard's output folder, its summary.json and its failures.csv rows."""

    folder: Path
    summary: dict[str, Any]
    failures: list[dict[str, str]]

    @property
    def record(self) -> dict[str, Any]:
        """What `ShardRecorder.record` wrote."""
        return self.summary["shard"]

    def positions(self, field: str) -> list[Position]:
        return [(int(item), int(number)) for item, number in self.record[field]]


def find_shards(out_dir: Path) -> list[Path]:
    """The shard folders `OUT/shard-I-of-N` under `out_dir`, by index."""
    folders = [path for path in Path(out_dir).glob(SHARD_FOLDER_PATTERN) if path.is_dir()]
    return sorted(folders, key=lambda path: [int(part) for part in re.findall(r"\d+", path.name)])


def merge_shards(out_dir: Path, shard_dirs: list[Path]) -> Path:
    """Merge shard outputs into `out_dir` as one unsharded output; returns the report path.

    Args:
        out_dir: the merged folder, created if needed; it must hold no summary.json yet.
        shard_dirs: one output folder per shard `0/N` ... `N-1/N`, in any order.

    Raises:
        ShardError: no shards, shards missing or given twice, shards of different models or
            inputs, overlapping shards, or `out_dir` already holding a merged output.
        OutputError: a shard folder holds no scoring summary.
    """
    out_dir = Path(out_dir)
    if (out_dir / SUMMARY_FILE).exists():
        raise ShardError(
            f"{out_dir / SUMMARY_FILE}: already exists; merge into a new folder or remove it"
        )
    shards = _checked_shards(shard_dirs)
    series = _sorted_series(shards)
    names = _merged_names(shards)
    keys = {position: key for key, position in enumerate(sorted(names))}

    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("maps", "previews"):
        (out_dir / folder).mkdir(exist_ok=True)
    entries = [
        _moved_entry(out_dir, folder, entry, names[position], keys[position])
        for position, folder, entry, _ in series
    ]
    _write_csv(out_dir / "scores.csv", SCORE_COLUMNS, [row for *_, rows in series for row in rows])
    failures = sorted(
        (position, row["source"], row["reason"])
        for shard in shards
        for position, row in zip(shard.positions("failure_positions"), shard.failures, strict=True)
    )
    _write_csv(
        out_dir / "failures.csv",
        FAILURE_COLUMNS,
        [dict(zip(FAILURE_COLUMNS, row[1:], strict=True)) for row in failures],
    )
    for name in COPIED_FILES:
        if (shards[0].folder / name).is_file():
            shutil.copyfile(shards[0].folder / name, out_dir / name)
    _write_summary(out_dir, shards, entries, len(failures))
    logger.info("Merged %d shards into %s", len(shards), out_dir)
    return build_report(out_dir)


def _checked_shards(shard_dirs: list[Path]) -> list[_Shard]:
    """The shards by index, once checked to be all of one sharded run."""
    if not shard_dirs:
        raise ShardError("no shard folders to merge; expected OUT/shard-I-of-N folders")
    shards = []
    for folder in shard_dirs:
        summary = read_summary(folder)
        if "shard" not in summary:
            raise ShardError(f"{folder}: not a shard (no shard in summary.json); use --shard")
        shards.append(_Shard(Path(folder), summary, read_failures(folder)))
    shards.sort(key=lambda shard: shard.record["index"])

    first = shards[0]
    counts = sorted({shard.record["count"] for shard in shards})
    indices = [shard.record["index"] for shard in shards]
    if len(counts) > 1 or indices != list(range(counts[0])):
        given = ", ".join(f"{shard.record['index']}/{shard.record['count']}" for shard in shards)
        last = counts[-1]
        raise ShardError(
            f"shards {given} given; expected each of 0/{last} ... {last - 1}/{last} exactly once"
        )
    for shard in shards[1:]:
        for what, differs in (
            ("model sha256", shard.summary["model"]["sha256"] != first.summary["model"]["sha256"]),
            ("input", shard.summary["input"] != first.summary["input"]),
            ("items seen", shard.record["items_seen"] != first.record["items_seen"]),
        ):
            if differs:
                raise ShardError(
                    f"{shard.folder}: {what} differs from that of {first.folder}; expected "
                    "shards of one model and one input"
                )
    return shards


def _sorted_series(
    shards: list[_Shard],
) -> list[tuple[Position, Path, dict[str, Any], list[dict[str, str]]]]:
    """(position, folder, summary entry, scores.csv rows) per series, in reading order."""
    series = []
    for shard in shards:
        with open(shard.folder / "scores.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        start = 0
        positions = shard.positions("series_positions")
        for position, entry in zip(positions, shard.summary["series"], strict=True):
            stop = start + len(entry["slice_scores"])
            series.append((position, shard.folder, entry, rows[start:stop]))
            start = stop
        if start != len(rows):
            raise ShardError(
                f"{shard.folder / 'scores.csv'}: {len(rows)} rows; expected {start}, the "
                "slices of the series in its summary.json"
            )
    series.sort(key=lambda item: item[0])
    return series


def _merged_names(shards: list[_Shard]) -> dict[Position, str]:
    """The output name of every opened series, given in reading order as an unsharded run."""
    opened = sorted(
        ((item, number), series_id)
        for shard in shards
        for item, number, series_id in shard.record["opened"]
    )
    positions = [position for position, _ in opened]
    if len(set(positions)) != len(positions):
        raise ShardError(
            "two shards scored the same input item; expected shards of one input folder, "
            "unchanged between the shard runs"
        )
    taken: set[str] = set()
    return {position: unique_name(series_id, taken) for position, series_id in opened}


def _moved_entry(
    out_dir: Path, folder: Path, entry: dict[str, Any], name: str, key: int
) -> dict[str, Any]:
    """Copy a series' map, previews and Secondary Capture under its merged name."""
    entry = {**entry, "key": key, "name": name}
    entry["map_file"] = _copy(folder / entry["map_file"], out_dir / "maps" / f"{name}.nii.gz")
    entry["preview_file"] = _copy(
        folder / entry["preview_file"], out_dir / "previews" / f"{name}.npz"
    )
    if entry["dicom_dir"]:
        target = out_dir / "dicom" / name
        shutil.copytree(folder / entry["dicom_dir"], target)
        entry["dicom_dir"] = target.relative_to(out_dir).as_posix()
    return entry


def _copy(source: Path, target: Path) -> str:
    """Copy `source` (absent for a series without previews) to `target`; its relative name."""
    if source.is_file():
        shutil.copyfile(source, target)
    return target.relative_to(target.parent.parent).as_posix()


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _write_summary(
    out_dir: Path,
    shards: list[_Shard],
    entries: list[dict[str, Any]],
    failures: int,
) -> None:
    """summary.json as an unsharded run writes it, plus the shards it was merged from."""
    summary = {key: value for key, value in shards[0].summary.items() if key != "shard"}
    summary["started"] = min(shard.summary["started"] for shard in shards)
    summary["finished"] = max(shard.summary["finished"] for shard in shards)
    flagged = [entry for entry in entries if entry["flagged_slices"]]
    summary["counts"] = {
        "series": len(entries),
        "slices": sum(len(entry["slice_scores"]) for entry in entries),
        "flagged_series": len(flagged),
        "flagged_slices": sum(len(entry["flagged_slices"]) for entry in flagged),
        "failures": failures,
    }
    summary["series"] = entries
    summary["merged_from"] = [str(shard.folder) for shard in shards]
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))

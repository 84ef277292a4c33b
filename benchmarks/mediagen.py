"""Sample files for multimodal_processing, valid and broken, with what was injected recorded.

``python -m benchmarks.mediagen --format document|image|geojson|timeseries --count N --out DIR``
(``--corrupt-rate``, default 0.01; ``--seed``). ``DIR/_mediagen.json`` says how many files of each
sort were written, so a test can check that stored + quarantined = in, and lists the protected
values planted in them (e-mails, phone numbers, a GPS marker) so it can scan what was stored.

- document: 1 to 3 page PDFs (English, German or French), a third with an e-mail and a phone
  number in the text, some with an e-mail as author; broken: **truncated** (quarantined).
- image: JPEG, PNG and WebP of 64 to 640 px, half the JPEGs with EXIF GPS tags, a tenth near
  duplicates of another (resized, re-encoded); broken: **bad header** (quarantined).
- geojson: a Feature with a polygon in Europe (WGS 84); broken: half **self-intersecting**
  (a bow tie, which ``make_valid`` repairs), half a ring of two points (quarantined).
- timeseries: CSV of ``timestamp,value``, an hour apart with jitter, some hours missing and some
  repeated; broken: half **non-monotonic** (sorted, and counted), half with values that are no
  number (quarantined).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FORMATS = ("document", "image", "geojson", "timeseries")
GPS_MARKER = "GPS-DATUM-MARKER-7f3a"  # planted in every GPS block: no stored byte may hold it
WORDS = {
    "en": ["the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "report"],
    "de": ["der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "des", "auf", "bericht"],
    "fr": ["le", "la", "les", "de", "des", "et", "en", "un", "une", "du", "est", "que", "rapport"],
}


def pdf(pages: list[str], title: str, author: str, created: datetime) -> bytes:
    """A minimal PDF 1.4: Helvetica text pages and an Info dictionary, with a correct xref table."""

    def escaped(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for index, text in enumerate(pages):
        lines = " T* ".join(f"({escaped(line)}) Tj" for line in text.split("\n"))
        stream = f"BT /F1 11 Tf 14 TL 72 720 Td {lines} ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * index)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    when = created.strftime("%Y%m%d%H%M%SZ")
    objects.append(
        f"<< /Title ({escaped(title)}) /Author ({escaped(author)}) /CreationDate (D:{when}) >>".encode()
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)


class Sample:
    """What one format's generator wrote: counts by sort, and the planted protected values."""

    def __init__(self, fmt: str) -> None:
        self.format, self.files, self.bytes = fmt, 0, 0
        self.sorts: dict[str, int] = {}
        self.planted: list[str] = []
        self.expected: dict[str, dict[str, Any]] = {}  # file -> what the pipeline must find

    def add(self, out: Path, name: str, data: bytes, sort: str, **expected: Any) -> None:
        (out / name).write_bytes(data)
        self.files += 1
        self.bytes += len(data)
        self.sorts[sort] = self.sorts.get(sort, 0) + 1
        self.expected[name] = {"sort": sort, **expected}

    def summary(self) -> dict[str, Any]:
        quarantined = sum(1 for e in self.expected.values() if e.get("quarantined"))
        return {
            "format": self.format,
            "files": self.files,
            "bytes": self.bytes,
            "sorts": self.sorts,
            "stored": self.files - quarantined,
            "quarantined": quarantined,
            "planted": self.planted,
            "expected": self.expected,
        }


def documents(rng: random.Random, count: int, broken: set[int], out: Path, sample: Sample) -> None:
    for n in range(count):
        language = rng.choice(sorted(WORDS))
        pages = []
        for _ in range(rng.randint(1, 3)):
            lines = [
                " ".join(rng.choice(WORDS[language]) for _ in range(12)) for _ in range(rng.randint(5, 30))
            ]
            pages.append("\n".join(lines))
        author = f"Author {n}"
        if n % 3 == 0:
            email, phone = f"person.{n}@example.com", f"+49 151 {n:04d} {rng.randint(1000, 9999)}"
            pages[0] += f"\nContact {email} or call {phone}."
            sample.planted += [email, phone]
        if n % 10 == 1:
            author = f"writer{n}@example.org"
            sample.planted.append(author)
        data = pdf(pages, f"Report {n}", author, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n))
        name = f"doc-{n:06d}.pdf"
        if n in broken:
            sample.add(out, name, data[: len(data) * 6 // 10], "truncated", quarantined=True)
        else:
            sample.add(out, name, data, "valid", pages=len(pages), language=language)


def images(rng: random.Random, count: int, broken: set[int], out: Path, sample: Sample) -> None:
    from PIL import Image, ImageDraw

    previous: Any = None
    for n in range(count):
        fmt = ("JPEG", "PNG", "WEBP")[n % 3]
        if previous is not None and n % 10 == 9:
            image = previous.resize((previous.width * 3 // 4, previous.height * 3 // 4))
            sort = "near_duplicate"
        else:
            width, height = rng.randint(64, 640), rng.randint(64, 480)
            image = Image.new("RGB", (width, height), tuple(rng.randint(0, 255) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            for _ in range(8):
                box = (
                    sorted(rng.randint(0, width) for _ in range(2)),
                    sorted(rng.randint(0, height) for _ in range(2)),
                )
                fill = tuple(rng.randint(0, 255) for _ in range(3))
                draw.rectangle((box[0][0], box[1][0], box[0][1], box[1][1]), fill=fill)
            sort = "valid"
        previous = image
        sink = io.BytesIO()
        options: dict[str, Any] = {}
        gps = fmt == "JPEG" and n % 2 == 0
        if gps:
            exif = Image.Exif()
            exif[0x010F] = "BenchCam"  # Make
            exif[0x0110] = "Model 7"  # Model
            exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 1.5), 0x12: GPS_MARKER}
            options["exif"] = exif.tobytes()
        image.save(sink, fmt, **options)
        data = sink.getvalue()
        name = f"img-{n:06d}.{fmt.lower()}"
        if n in broken:
            sample.add(out, name, b"\x00BADHEADER" + data[10:], "bad_header", quarantined=True)
        else:
            sample.add(out, name, data, sort, width=image.width, height=image.height, gps=gps)
    sample.planted.append(GPS_MARKER)


def _polygon(rng: random.Random) -> list[list[float]]:
    lon, lat = rng.uniform(-5, 20), rng.uniform(40, 58)
    size = rng.uniform(0.001, 0.05)
    corners = [(lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size)]
    ring = [[x + rng.uniform(-size, size) / 10, y + rng.uniform(-size, size) / 10] for x, y in corners]
    return [*ring, ring[0]]


def geojson(rng: random.Random, count: int, broken: set[int], out: Path, sample: Sample) -> None:
    for n in range(count):
        ring = _polygon(rng)
        sort, expected = "valid", {}
        if n in broken and n % 2 == 0:
            ring = [ring[0], ring[2], ring[1], ring[3], ring[0]]  # a bow tie
            sort, expected = "self_intersecting", {"repaired": True}
        elif n in broken:
            ring = [ring[0], ring[1]]  # no ring at all
            sort, expected = "two_point_ring", {"quarantined": True}
        feature = {
            "type": "Feature",
            "properties": {"parcel": f"P-{n:06d}", "landuse": rng.choice(["farm", "forest", "urban"])},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
        sample.add(out, f"parcel-{n:06d}.geojson", json.dumps(feature).encode(), sort, **expected)


def timeseries(rng: random.Random, count: int, broken: set[int], out: Path, sample: Sample) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(count):
        hours = rng.randint(48, 24 * 14)
        points: list[tuple[datetime, str]] = []
        missing = duplicates = 0
        for hour in range(hours):
            if 0 < hour < hours - 1 and rng.random() < 0.02:
                missing += 1
                continue
            at = start + timedelta(hours=hour, seconds=rng.randint(0, 3599))
            points.append((at, f"{rng.gauss(20, 5):.3f}"))
            if rng.random() < 0.01:
                points.append((at, f"{rng.gauss(20, 5):.3f}"))
                duplicates += 1
        sort, expected = "valid", {"gaps": missing, "duplicates": duplicates, "out_of_order": 0}
        if n in broken and n % 2 == 0:
            swaps = 0
            for index in range(5, len(points) - 1, max(1, len(points) // 4)):
                if points[index][0] != points[index + 1][0]:
                    points[index], points[index + 1] = points[index + 1], points[index]
                    swaps += 1
            sort, expected = "non_monotonic", {**expected, "out_of_order": swaps}
        elif n in broken:
            points[len(points) // 2] = (points[len(points) // 2][0], "n/a")
            sort, expected = "not_a_number", {"quarantined": True}
        lines = ["timestamp,value", *(f"{at.strftime('%Y-%m-%dT%H:%M:%SZ')},{value}" for at, value in points)]
        sample.add(out, f"sensor-{n:06d}.csv", ("\n".join(lines) + "\n").encode(), sort, **expected)


def generate(fmt: str, count: int, corrupt_rate: float, out: Path, seed: int = 7) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    broken = set(rng.sample(range(count), round(count * corrupt_rate)))
    sample = Sample(fmt)
    {"document": documents, "image": images, "geojson": geojson, "timeseries": timeseries}[fmt](
        rng, count, broken, out, sample
    )
    summary = sample.summary()
    (out / "_mediagen.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--corrupt-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.count < 1 or not 0 <= args.corrupt_rate <= 1:
        parser.error("need --count >= 1 and 0 <= --corrupt-rate <= 1")
    summary = generate(args.format, args.count, args.corrupt_rate, args.out, args.seed)
    print(json.dumps({k: summary[k] for k in ("format", "files", "bytes", "sorts", "stored", "quarantined")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

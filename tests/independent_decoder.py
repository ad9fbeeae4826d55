"""A telemetry decoder written from docs/protocol.md alone (sections 2 and 3), as a platform
engineer would write one: it imports nothing of edgegw. The tests compare what it reads with
what `edgegw platform decode` prints, so the document and the codec cannot drift apart."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
import zstandard

QUALITY = {1: "timeout", 2: "exception", 3: "bad_data", 4: "unavailable"}
MAX_BODY = 16 * 1024 * 1024


def decode(payload: bytes, catalogue: dict[str, Any]) -> dict[str, Any]:
    """``{"seq": ..., "points": [{"device", "point", "ts", "value"[, "quality"]}]}``."""
    if len(payload) < 2 or payload[0] != 1:
        raise ValueError("not a version 1 batch")
    flags = payload[1]
    if flags & 0xFC:
        raise ValueError("reserved flag bits set")
    body = payload[2:]
    comp = flags & 0x03
    if comp == 1:
        body = zlib.decompress(body)
    elif comp == 2:
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_BODY)
    elif comp == 3:
        raise ValueError("reserved compression id")
    (epoch, _cat_version, seq, base_ts, times, ncols, ids, codes, refs, values,
     quality) = msgpack.unpackb(body, raw=False)[:11]
    if epoch != catalogue["epoch"]:
        raise ValueError("another epoch")
    points = catalogue["points"]
    bad = {index: QUALITY[code] for index, code in quality}
    out: list[dict[str, Any]] = []
    firsts: dict[int, int] = {}          # column -> its first integer, resolved
    t = base_ts
    pid = 0
    pos = 0
    col = 0
    for g, tvec in enumerate(times):
        # the group's first timestamp is relative to the previous group's first one
        ts = [t + tvec[0]]
        for dt in tvec[1:]:
            ts.append(ts[-1] + dt)
        t = ts[0]
        for _ in range(ncols[g]):
            pid += ids[col]
            entries = values[pos:pos + len(ts)]
            code = codes[col]
            if code == 0:
                decoded = list(entries)
            else:
                decoded = []
                n: int | None = None
                for e in entries:
                    if e is None:
                        decoded.append(None)
                        continue
                    if n is None:                       # the first non-nil entry
                        n = e + (firsts[col - refs[col]] if refs[col] else 0)
                        firsts[col] = n
                    else:
                        n += e
                    if code == 1:
                        decoded.append(n)
                    elif 16 <= code <= 28:
                        decoded.append(n / 10 ** (code - 16))
                    elif 32 <= code <= 44:
                        x = n / 10 ** (code - 32)
                        decoded.append(struct.unpack("<f", struct.pack("<f", x))[0])
                    else:
                        raise ValueError(f"unknown code {code}")
            device, point = points[pid][0], points[pid][1]
            for k, value in enumerate(decoded):
                p: dict[str, Any] = {"device": device, "point": point, "ts": ts[k],
                                     "value": value}
                if pos + k in bad:
                    p["quality"] = bad[pos + k]
                out.append(p)
            pos += len(ts)
            col += 1
    return {"seq": seq, "points": out}

"""Rollups (job ``status.rollup``): raw samples -> 1-minute buckets -> 1-hour buckets -> 1-day buckets, then the
retention of each level.

Each level has a watermark (``StatusState.meta``): everything before it is folded into that level, so a run only
reads what is new, and re-running a period rewrites the same buckets (idempotent). Raw samples are folded two
minutes after the fact (a sweep still running may write a sample for the minute that just ended). Data is only
ever deleted once the next level holds it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from hostbay.core import clock
from hostbay.core.db import db

from .models import RAW_RETENTION, RES_DAY, RES_HOUR, RES_MINUTE, RETENTION, Rollup, Sample, StatusState
from .status import _floor, state

LAG = timedelta(minutes=2)
BATCH = 5000


def _fold(rows, res: int) -> dict:
    """rows: (probe_id, ts, count, ok, maint, maint_ok, lat_sum, lat_n, lat_max) -> buckets of ``res``."""
    out: dict[tuple, list] = {}
    for pid, ts, n, ok, m, mok, lsum, ln, lmax in rows:
        key = (pid, _floor(ts, res))
        acc = out.get(key)
        if acc is None:
            acc = out[key] = [0, 0, 0, 0, 0.0, 0, None]
        acc[0] += n
        acc[1] += ok
        acc[2] += m
        acc[3] += mok
        acc[4] += lsum
        acc[5] += ln
        if lmax is not None and (acc[6] is None or lmax > acc[6]):
            acc[6] = lmax
    return out


def _write(res: int, lo: datetime, hi: datetime, folded: dict) -> int:
    db.session.execute(delete(Rollup).where(Rollup.resolution == res, Rollup.bucket >= lo, Rollup.bucket < hi))
    rows = [{"probe_id": pid, "resolution": res, "bucket": b, "count": a[0], "ok_count": a[1], "maint_count": a[2],
             "maint_ok_count": a[3], "latency_sum": round(a[4], 3), "latency_n": a[5], "latency_max": a[6]}
            for (pid, b), a in folded.items()]
    for i in range(0, len(rows), BATCH):
        db.session.execute(Rollup.__table__.insert(), rows[i:i + BATCH])
    return len(rows)


def _raw_rows(lo: datetime, hi: datetime):
    for pid, ts, ok, maint, lat in db.session.execute(
            select(Sample.probe_id, Sample.ts, Sample.ok, Sample.maintenance, Sample.latency_ms)
            .where(Sample.ts >= lo, Sample.ts < hi)):
        good = bool(ok)
        yield (pid, ts, 1, 1 if good else 0, 1 if maint else 0, 1 if (good and maint) else 0,
               (lat or 0.0) if good and lat is not None else 0.0, 1 if good and lat is not None else 0,
               lat if good else None)


def _rollup_rows(res: int, lo: datetime, hi: datetime):
    return db.session.execute(
        select(Rollup.probe_id, Rollup.bucket, Rollup.count, Rollup.ok_count, Rollup.maint_count,
               Rollup.maint_ok_count, Rollup.latency_sum, Rollup.latency_n, Rollup.latency_max)
        .where(Rollup.resolution == res, Rollup.bucket >= lo, Rollup.bucket < hi)).all()


def run(now: datetime | None = None) -> dict:
    """Fold what is new at every level, then apply retention. Returns the number of buckets written per level."""
    now = now or clock.now()
    st = state()
    meta = dict(st.meta or {})
    written = {}

    def mark(res):
        return datetime.fromisoformat(meta[str(res)]) if meta.get(str(res)) else None

    # raw -> minute
    limit = _floor(now - LAG, RES_MINUTE)
    lo = mark(RES_MINUTE)
    if lo is None:
        first = db.session.scalar(select(func.min(Sample.ts)))
        lo = _floor(first, RES_MINUTE) if first else None
    if lo is not None and lo < limit:
        written[RES_MINUTE] = _write(RES_MINUTE, lo, limit, _fold(_raw_rows(lo, limit), RES_MINUTE))
        meta[str(RES_MINUTE)] = limit.isoformat()
    # minute -> hour -> day
    for finer, res in ((RES_MINUTE, RES_HOUR), (RES_HOUR, RES_DAY)):
        src_mark = mark(finer)
        if src_mark is None:
            continue
        limit = _floor(src_mark, res)
        lo = mark(res)
        if lo is None:
            first = db.session.scalar(select(func.min(Rollup.bucket)).where(Rollup.resolution == finer))
            lo = _floor(first, res) if first else None
        if lo is not None and lo < limit:
            written[res] = _write(res, lo, limit, _fold(_rollup_rows(finer, lo, limit), res))
            meta[str(res)] = limit.isoformat()
    # retention: a level's rows go once they are old and the next level holds them
    raw_until = min(now - RAW_RETENTION, mark(RES_MINUTE) or datetime.min)
    purged = db.session.execute(delete(Sample).where(Sample.ts < raw_until)).rowcount
    for res, nxt in ((RES_MINUTE, RES_HOUR), (RES_HOUR, RES_DAY), (RES_DAY, None)):
        until = now - RETENTION[res]
        if nxt is not None:
            until = min(until, mark(nxt) or datetime.min)
        purged += db.session.execute(delete(Rollup).where(Rollup.resolution == res, Rollup.bucket < until)).rowcount
    db.session.execute(StatusState.__table__.update().where(StatusState.id == 1).values(meta=meta))
    db.session.commit()
    return {"written": written, "purged": purged}

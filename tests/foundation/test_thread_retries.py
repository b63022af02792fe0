"""Thread job mode: operations waiting to be retried do not occupy the job threads."""

import time

import pytest

from hostbay.core import jobs
from hostbay.core.db import db


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread"}


def test_waiting_retries_leave_the_pool_free(app):
    waiting = [jobs.enqueue("core.ping", key=f"later-{i}") for i in range(6)]
    db.session.commit()  # dispatched now: let them finish, then queue them again as delayed retries
    deadline = time.time() + 10
    while time.time() < deadline and any(db.session.get(jobs.Operation, o.id).state != jobs.SUCCEEDED
                                         for o in waiting):
        db.session.rollback()
        time.sleep(0.1)
    db.session.rollback()
    for o in waiting:
        db.session.get(jobs.Operation, o.id).state = jobs.RETRYING
    db.session.commit()
    for o in waiting:
        jobs.dispatch(app, o.id, delay=30)
    now = jobs.enqueue("core.ping", key="now", payload={"value": 1})
    db.session.commit()
    deadline = time.time() + 5
    state = None
    while time.time() < deadline:
        state = db.session.get(jobs.Operation, now.id).state
        db.session.rollback()
        if state == jobs.SUCCEEDED:
            break
        time.sleep(0.1)
    assert state == jobs.SUCCEEDED

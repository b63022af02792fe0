"""ISO uploads: size limit, ISO 9660 signature, quota in count and bytes (also under a race), safe storage."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from hostbay.core import iso as iso_mod
from hostbay.core.activity import AuditEntry
from hostbay.core.db import db
from hostbay.testing.pytest_plugin import login

KIB = 1024


def _upload(client, data: bytes, filename: str = "debian-12.iso"):
    return client.post("/panel/isos", data={"iso": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def _isos(user):
    return db.session.scalars(select(iso_mod.IsoImage).filter_by(user_id=user.id)).all()


def _leftovers(app):
    return sorted(p.name for p in iso_mod.iso_dir().iterdir())


def test_upload_is_stored_safely_outside_static(app, client, make_user, make_iso):
    user = make_user()
    login(client, user)
    data = make_iso(40 * KIB)
    resp = _upload(client, data, filename="../../static/evil <name>.iso")
    assert resp.status_code == 303
    [image] = _isos(user)
    assert image.state == "pending"
    assert image.size_bytes == len(data) and image.sha256 == hashlib.sha256(data).hexdigest()
    assert iso_mod._STORED_NAME.match(image.stored_name)
    assert "evil" not in image.stored_name and "/" not in image.name and image.name.endswith(".iso")
    path = image.path
    assert path.read_bytes() == data
    instance = Path(app.config["INSTANCE_PATH"]).resolve()
    static = Path(app.static_folder).resolve()
    assert instance in path.parents and static not in path.parents
    assert _leftovers(app) == [image.stored_name]  # no .part file left behind
    # Not reachable through the static route, whatever the path tricks.
    for url in (f"/static/{image.stored_name}", f"/static/../instance/isos/{image.stored_name}",
                f"/static/%2e%2e/{image.stored_name}", f"/static/isos/{image.stored_name}"):
        assert client.get(url).status_code == 404, url
    page = client.get("/panel/isos")
    assert page.status_code == 200
    assert b"Waiting for approval" in page.data and b"evil &lt;name&gt;.iso" in page.data
    assert image.stored_name.encode() not in page.data
    assert db.session.scalar(select(AuditEntry).filter_by(action="iso.upload", target_id=image.uuid))


def test_too_big_is_refused_and_nothing_kept(app, client, make_user, make_iso):
    user = make_user()
    login(client, user)
    resp = _upload(client, make_iso(65 * KIB))  # limit is 64 KiB
    assert resp.status_code == 413
    assert b"larger than" in resp.data
    assert _isos(user) == [] and _leftovers(app) == []


def test_too_big_without_content_length_is_cut_while_streaming(app, make_user, make_iso):
    user = make_user()
    inc = iso_mod.Incoming(app.config["HOSTBAY_ISO_MAX_BYTES"])
    data = make_iso(65 * KIB)
    with pytest.raises(iso_mod.IsoTooLarge):
        for i in range(0, len(data), 8 * KIB):
            inc.write(data[i:i + 8 * KIB])
    inc.discard()
    assert inc.size <= 72 * KIB and _leftovers(app) == []
    assert _isos(user) == []


@pytest.mark.parametrize("data", [b"x" * (40 * KIB), b"CD001" * 10, b"\0" * 32769 + b"CD000" + b"\0" * 100])
def test_not_iso9660_is_refused(app, client, make_user, data):
    user = make_user()
    login(client, user)
    resp = _upload(client, data, filename="virus.iso")
    assert resp.status_code == 400
    assert b"not an ISO 9660 image" in resp.data
    assert _isos(user) == [] and _leftovers(app) == []


def test_empty_and_missing_file(app, client, make_user):
    user = make_user()
    login(client, user)
    assert _upload(client, b"").status_code == 400
    assert client.post("/panel/isos", data={}, content_type="multipart/form-data").status_code == 400
    assert _isos(user) == [] and _leftovers(app) == []


def test_quota_in_count(app, client, make_user, make_iso):
    user = make_user()
    login(client, user)
    for n in range(3):
        assert _upload(client, make_iso(33 * KIB + n), f"img{n}.iso").status_code == 303
    resp = _upload(client, make_iso(33 * KIB), "one-too-many.iso")
    assert resp.status_code == 400 and b"at most 3 ISO images" in resp.data
    assert len(_isos(user)) == 3 and len(_leftovers(app)) == 3
    page = client.get("/panel/isos").data
    assert b"Images: 3 of 3" in page and b'<progress id="quota-count" max="3" value="3">' in page
    # A per-account override lifts the default.
    iso_mod.set_quota(user.id, max_count=4, max_bytes=None)
    db.session.commit()
    assert _upload(client, make_iso(33 * KIB), "fourth.iso").status_code == 303
    assert len(_isos(user)) == 4



def test_package_iso_quota_applies_to_its_customers(app, client, make_user, make_iso, make_package, make_service):
    user = make_user()
    small = make_package(iso_quota_count=4)
    big = make_package(iso_quota_count=5, iso_quota_bytes=180 * KIB)
    make_service(user, small)
    make_service(user, big)
    login(client, user)
    for n in range(5):  # the largest package quota (5) applies, not the default (3)
        assert _upload(client, make_iso(33 * KIB + n), f"img{n}.iso").status_code == 303
    resp = _upload(client, make_iso(33 * KIB), "sixth.iso")
    assert resp.status_code == 400 and b"at most 5 ISO images" in resp.data
    assert len(_isos(user)) == 5
    q = iso_mod.quota_for(user.id)
    assert (q.max_count, q.max_bytes) == (5, 180 * KIB)


def test_account_override_wins_over_the_package_quota(app, make_user, make_package, make_service):
    user = make_user()
    make_service(user, make_package(iso_quota_count=5, iso_quota_bytes=120 * KIB))
    iso_mod.set_quota(user.id, max_count=2, max_bytes=None)
    db.session.commit()
    q = iso_mod.quota_for(user.id)
    assert (q.max_count, q.max_bytes) == (2, 120 * KIB)  # the override's count; its unset size: the package's


def test_without_a_live_service_the_default_quota_applies(app, make_user, make_package, make_service):
    user = make_user()
    pkg = make_package(iso_quota_count=5, iso_quota_bytes=120 * KIB)
    make_service(user, pkg, state="terminated")
    make_service(user, pkg, state="removal_queued")
    make_service(user, make_package())  # a live service whose package sets no ISO quota
    q = iso_mod.quota_for(user.id)
    assert (q.max_count, q.max_bytes) == (app.config["HOSTBAY_ISO_QUOTA_COUNT"], app.config["HOSTBAY_ISO_QUOTA_BYTES"])
    assert (q.max_count, q.max_bytes) == (3, 200 * KIB)


def test_quota_in_bytes(app, client, make_user, make_iso):
    user = make_user()
    iso_mod.set_quota(user.id, max_count=10, max_bytes=100 * KIB)
    db.session.commit()
    login(client, user)
    assert _upload(client, make_iso(60 * KIB)).status_code == 303
    # 60 + 60 KiB > 100 KiB: refused (the form's limit is the room left, 40 KiB)
    resp = _upload(client, make_iso(60 * KIB))
    assert resp.status_code == 413 and len(_isos(user)) == 1
    page = client.get("/panel/isos").data
    assert b"Space: 60.0 KiB of 100.0 KiB" in page
    # The admission check itself refuses over-quota bytes too (a direct caller, no form limit).
    with pytest.raises(iso_mod.IsoQuotaExceeded, match="does not fit"):
        iso_mod.upload_bytes(user, make_iso(50 * KIB), "big.iso")
    db.session.rollback()
    assert len(_isos(user)) == 1 and len(_leftovers(app)) == 1
    assert _upload(client, make_iso(40 * KIB)).status_code == 303  # exactly fills the quota
    assert iso_mod.quota_for(user.id).used_bytes == 100 * KIB


def test_rejected_images_do_not_count(app, make_user, make_iso):
    user, staff = make_user(), make_user(role="support")
    iso_mod.set_quota(user.id, max_count=1, max_bytes=None)
    image = iso_mod.upload_bytes(user, make_iso(), "a.iso")
    db.session.commit()
    with pytest.raises(iso_mod.IsoQuotaExceeded):
        iso_mod.upload_bytes(user, make_iso(), "b.iso")
    db.session.rollback()
    iso_mod.decide(image, False, staff, "Unknown source")
    db.session.commit()
    assert not image.path.exists()  # the rejected file is removed
    iso_mod.upload_bytes(user, make_iso(), "c.iso")
    db.session.commit()


def test_parallel_uploads_cannot_both_take_the_last_slot(app, make_user, make_iso):
    user = make_user()
    user_id = user.id
    iso_mod.set_quota(user_id, max_count=1, max_bytes=None)
    db.session.commit()  # no transaction stays open in this thread (SQLite: writers queue on BEGIN IMMEDIATE)
    results, barrier = [], threading.Barrier(4)

    def worker(n):
        with app.app_context():
            from hostbay.core.accounts import User

            u = db.session.get(User, user_id)
            db.session.commit()
            inc = iso_mod.Incoming(app.config["HOSTBAY_ISO_MAX_BYTES"])
            inc.write(make_iso(33 * KIB + n))
            barrier.wait()
            try:
                iso_mod.admit_upload(u, inc, f"p{n}.iso")
                db.session.commit()
                results.append("ok")
            except iso_mod.IsoQuotaExceeded:
                db.session.rollback()
                results.append("quota")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["ok", "quota", "quota", "quota"]
    assert len(_isos(user)) == 1 and len(_leftovers(app)) == 1


def test_delete_removes_row_and_file(app, client, make_user, make_iso):
    user, other = make_user(), make_user()
    image = iso_mod.upload_bytes(user, make_iso(), "a.iso")
    db.session.commit()
    path = image.path
    login(client, other)
    assert client.post(f"/panel/isos/{image.uuid}/delete").status_code == 404
    assert path.exists()
    client.post("/logout")
    login(client, user)
    assert client.post(f"/panel/isos/{image.uuid}/delete").status_code == 303
    db.session.expire_all()
    assert _isos(user) == [] and not path.exists()


def test_upload_form_refuses_missing_csrf(app, client, make_user, make_iso):
    user = make_user()
    login(client, user)
    app.config["WTF_CSRF_ENABLED"] = True
    assert _upload(client, make_iso()).status_code == 400
    assert _isos(user) == [] and _leftovers(app) == []


def test_a_real_iso_made_by_genisoimage_is_accepted(app, client, make_user, tmp_path):
    import shutil
    import subprocess

    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if not tool:
        pytest.skip("needs genisoimage")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README.TXT").write_text("hello\n")
    out = tmp_path / "real.iso"
    app.config.update(HOSTBAY_ISO_MAX_BYTES=4 * 1024 * KIB, HOSTBAY_ISO_QUOTA_BYTES=8 * 1024 * KIB)
    subprocess.run([tool, "-quiet", "-V", "HOSTBAY", "-o", str(out), str(tmp_path / "src")], check=True)
    user = make_user()
    login(client, user)
    assert _upload(client, out.read_bytes(), "real.iso").status_code == 303
    [image] = _isos(user)
    assert image.size_bytes == out.stat().st_size and image.path.read_bytes() == out.read_bytes()


def test_upload_with_the_pages_token_goes_through(app, client, make_user, make_iso):
    """With CSRF on, the token is the form's first field (never in the URL, which lands in access logs); it is
    checked before the upload is parsed, and a forged, missing or late token is refused."""
    import html
    import re

    user = make_user()
    login(client, user)
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get("/panel/isos").get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]*/panel/isos)" enctype="multipart/form-data"[^>]*>\s*'
                     r'<input type="hidden" name="csrf_token" value="([^"]+)">', page)
    assert form is not None and "csrf_token=" not in form.group(1)
    action, token = html.unescape(form.group(1)), form.group(2)
    forged = client.post(action, data={"csrf_token": "forged", "iso": (io.BytesIO(make_iso()), "a.iso")},
                         content_type="multipart/form-data")
    assert forged.status_code == 400 and _isos(user) == []
    in_url = client.post(f"{action}?csrf_token={token}", data={"iso": (io.BytesIO(make_iso()), "a.iso")},
                         content_type="multipart/form-data")
    assert in_url.status_code == 400 and _isos(user) == []
    ok = client.post(action, data={"csrf_token": token, "iso": (io.BytesIO(make_iso()), "a.iso")},
                     content_type="multipart/form-data")
    assert ok.status_code == 303 and len(_isos(user)) == 1

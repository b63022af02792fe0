import os
import stat

import pytest

from hostbay.core import config


def test_defaults_are_embedded_mode(tmp_path):
    cfg = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path)})
    assert cfg["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'hostbay.sqlite3'}"
    assert cfg["HOSTBAY_JOBS"] == "thread" and cfg["HOSTBAY_EMBEDDED"] and cfg["HOSTBAY_PLUGINS"] is None
    assert cfg["HOSTBAY_RETENTION_DAYS"] == 3


def test_secret_key_generated_once_and_private(tmp_path):
    a = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path)})["SECRET_KEY"]
    b = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path)})["SECRET_KEY"]
    assert a == b and len(a) == 64
    mode = stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode)
    assert mode == 0o600
    other = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path / "other")})["SECRET_KEY"]
    assert other != a


def test_production_settings(tmp_path):
    cfg = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path), "HOSTBAY_DATABASE_URL": "postgresql+psycopg://db/x",
                       "HOSTBAY_REDIS_URL": "redis://r:6379/0", "HOSTBAY_SECRET_KEY": "k",
                       "HOSTBAY_PLUGINS": "kvm, crypto_payments ,"})
    assert cfg["HOSTBAY_JOBS"] == "rq" and not cfg["HOSTBAY_EMBEDDED"]
    assert cfg["HOSTBAY_PLUGINS"] == ["kvm", "crypto_payments"] and cfg["SECRET_KEY"] == "k"
    assert not (tmp_path / "secret_key").exists()


def test_bad_number_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError):
        config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path), "HOSTBAY_RETENTION_DAYS": "three"})

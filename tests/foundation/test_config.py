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


def test_key_settings_reach_the_checks_through_the_config(tmp_path):
    """`hostbay check` reads the app config, not the environment: the loader records whether the signing key
    was set or generated."""
    cfg = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path)})
    assert cfg["HOSTBAY_SECRET_KEY_SET"] is False and cfg["HOSTBAY_SECRET_KEYS"] is None
    cfg = config.load({"HOSTBAY_INSTANCE_PATH": str(tmp_path), "HOSTBAY_SECRET_KEY": "k", "HOSTBAY_SECRET_KEYS": "a,b"})
    assert cfg["HOSTBAY_SECRET_KEY_SET"] is True and cfg["HOSTBAY_SECRET_KEYS"] == "a,b"


def test_metrics_folder_is_mapped_onto_prometheus_multiprocess_mode(tmp_path):
    folder = tmp_path / "metrics"
    env = {"HOSTBAY_METRICS_DIR": str(folder)}
    assert config.prepare_metrics_dir(env) == str(folder)
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(folder) and folder.is_dir()
    env = {"HOSTBAY_METRICS_DIR": str(folder), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "own")}
    assert config.prepare_metrics_dir(env) == str(tmp_path / "own")  # an explicit prometheus setting wins
    assert config.prepare_metrics_dir({}) is None

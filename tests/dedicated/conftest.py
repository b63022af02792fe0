import shutil

import pytest

from hostbay.testing.bmcsim import BmcSimulator

FAST_IPMI = {"ipmi": {"min_interval_ms": 20, "verify_timeout": 5, "backoff_ms": 50, "attempts": 3, "timeout": 10}}


@pytest.fixture
def app_config(tmp_path):
    return {"HOSTBAY_POWER_SETTINGS": {"ipmi": {**FAST_IPMI["ipmi"], "lock_dir": str(tmp_path / "locks")}}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    if shutil.which("ipmitool") is None:
        pytest.skip("needs ipmitool")
    s = BmcSimulator(tmp_path_factory.mktemp("bmc")).start()
    yield s
    s.stop()


@pytest.fixture
def ded_package(make_package):
    def _make(**hw):
        hardware = {"min_cores": 8, "min_ram_gib": 32, "min_disk_gib": 500, "location": "fra1", **hw}
        return make_package(kind="dedicated", driver="ipmi", name="Metal 8", monthly_cents=9900, ipv4_count=0,
                            vcpus=0, memory_mib=0, disk_gib=0, hardware=hardware)
    return _make


@pytest.fixture
def add_server(db):
    from hostbay.core.inventory import HardwareServer

    counter = iter(range(1, 10 ** 6))

    def _add(sim=None, **kw):
        n = next(counter)
        values = dict(name=f"fra1-r1-u{n:02d}", cpu_model="Intel Xeon E-2388G", cpu_cores=8, ram_gib=64,
                      disk_count=2, disk_size_gib=480, disk_type="nvme", nic_speed_mbit=10000, location="fra1",
                      rack="R1", rack_position=f"U{n:02d}")
        if sim is not None:
            values.update(bmc_host="127.0.0.1", bmc_port=sim.port, bmc_username=sim.user, bmc_cipher_suite="3")
        values.update(kw)
        s = HardwareServer(**values)
        if sim is not None:
            s.set_bmc_password(sim.password)
        db.session.add(s)
        db.session.commit()
        return s
    return _add

"""cyclegan.devices: thread caps from affinity and cgroup quotas, and which precisions are native."""

from __future__ import annotations

import pytest
import torch

from cyclegan import devices as dev
from cyclegan.errors import CycleGANError, DeviceError

# ------------------------------------------------------------------------------------------ threads


def test_cgroup_quota_v2_and_v1(tmp_path):
    none = tmp_path / "no-proc-cgroup"
    assert dev.cgroup_cpu_quota(tmp_path, none) is None  # no files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert dev.cgroup_cpu_quota(tmp_path, none) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert dev.cgroup_cpu_quota(tmp_path, none) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert dev.cgroup_cpu_quota(v1, none) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert dev.cgroup_cpu_quota(v1, none) == 3.0


def test_cgroup_quota_of_the_process_own_cgroup_and_its_parents(tmp_path):
    """A systemd slice or a nested container: the limit sits on the process's cgroup or above it."""
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/system.slice/app.service\n")
    (tmp_path / "system.slice" / "app.service").mkdir(parents=True)
    (tmp_path / "system.slice" / "app.service" / "cpu.max").write_text("max 100000\n")
    assert dev.cgroup_cpu_quota(tmp_path, proc) is None
    (tmp_path / "system.slice" / "cpu.max").write_text("250000 100000\n")  # the parent slice limits it
    assert dev.cgroup_cpu_quota(tmp_path, proc) == 2.5
    (tmp_path / "system.slice" / "app.service" / "cpu.max").write_text("50000 100000\n")
    assert dev.cgroup_cpu_quota(tmp_path, proc) == 0.5  # the tightest one counts

    v1 = tmp_path / "v1"
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    assert dev.cgroup_cpu_quota(v1, proc) == 2.0


def test_usable_cpus_rounds_the_quota_up_and_never_below_one(tmp_path):
    none = tmp_path / "no-proc-cgroup"
    affinity = dev.usable_cpus(tmp_path, none)  # no quota files: the affinity mask alone
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert dev.usable_cpus(tmp_path, none) == 1
    (tmp_path / "cpu.max").write_text(f"{100000 * affinity + 1} 100000\n")  # more than the mask allows
    assert dev.usable_cpus(tmp_path, none) == affinity


def test_cap_threads_lowers_but_never_raises(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(dev, "usable_cpus", lambda: 1)
        assert dev.cap_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(dev, "usable_cpus", lambda: 8)
        assert dev.cap_threads() == 1 and torch.get_num_threads() == 1  # 8 allowed, but 1 stays 1
        dev.apply_threads(2)
        assert torch.get_num_threads() == 2
        with pytest.raises(CycleGANError, match="^threads must be >= 0"):
            dev.apply_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_precision_warning_only_where_the_precision_is_emulated(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dev, "native_bf16", lambda device: False)
    assert "emulated" in dev.precision_warning(cpu, "bf16")
    monkeypatch.setattr(dev, "native_bf16", lambda device: True)
    assert dev.precision_warning(cpu, "bf16") is None
    assert dev.precision_warning(cpu, "fp32") is None
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert "much slower than fp32" in dev.precision_warning(cpu, "fp16")
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert dev.precision_warning(cpu, "fp16") is None
    assert dev.precision_warning(cuda, "fp16") is None


def test_resolve_device_refuses_what_is_not_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device("auto").type in ("cpu", "mps")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(DeviceError, match="^device cuda: no CUDA device"):
        dev.resolve_device("cuda")
    with pytest.raises(DeviceError, match="choose from"):
        dev.resolve_device("tpu")

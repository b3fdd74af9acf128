"""CPU threads under contention: mlm_pretrain.hardware.ThreadGovernor (pretrain.threads / finetune.threads)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from mlm_pretrain import hardware
from mlm_pretrain.config import ConfigError, load_config
from mlm_pretrain.hardware import ThreadGovernor


@pytest.fixture
def threads_back():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """Stands in for /proc/stat and os.times: ``other`` cores' worth of work by other processes and
    ``own`` by this one, per second of a fake clock."""

    def __init__(self, monkeypatch, cores: int = 4):
        self.t, self.busy, self.own_cpu, self.other, self.own = 100.0, 0.0, 0.0, 0.0, 0.0
        monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(hardware, "_cpu_busy_seconds", lambda cpus: self.busy)
        monkeypatch.setattr(hardware.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(hardware.time, "sleep", self.advance)
        monkeypatch.setattr(hardware.os, "times", lambda: os.times_result((self.own_cpu, 0.0, 0.0, 0.0, self.t)))

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.busy += (self.other + self.own) * seconds
        self.own_cpu += self.own * seconds


def test_threads_follow_the_cores_other_processes_leave_free(monkeypatch, threads_back):
    torch.set_num_threads(4)
    machine = FakeMachine(monkeypatch, cores=4)
    gov = ThreadGovernor("auto", interval=3.0)
    assert gov.threads == 4 and gov.history == [(0.2, 4)]  # idle machine: every core
    machine.own = 4.0
    machine.advance(1.0)
    assert gov.step() == 4                                  # not re-read before the interval
    machine.other = 2.2                                     # another job takes two cores (and a bit)
    machine.own = 1.8
    machine.advance(3.0)
    assert gov.step() == 2
    machine.other, machine.own = 3.6, 0.4                  # and then nearly all of them: never below one
    machine.advance(3.0)
    assert gov.step() == 1
    machine.other, machine.own = 0.0, 1.0                  # it stopped: back to every core, never above
    machine.advance(3.0)
    assert gov.step() == 4
    assert [n for _, n in gov.history] == [4, 2, 1, 4]
    summary = gov.summary()
    assert summary["threads_setting"] == "auto" and summary["threads_changes"][-1][1] == 4
    gov.close()
    assert torch.get_num_threads() == 4


def test_a_number_pins_the_threads_and_auto_never_exceeds_torchs_count(monkeypatch, threads_back):
    torch.set_num_threads(2)
    machine = FakeMachine(monkeypatch, cores=8)                # OMP_NUM_THREADS=2 on an 8-core machine
    gov = ThreadGovernor("auto", interval=1.0)
    machine.advance(2.0)
    assert gov.step() == 2
    pinned = ThreadGovernor(3)
    machine.other = 8.0
    machine.advance(5.0)
    assert pinned.step() == 3 and pinned.summary()["threads_setting"] == 3
    pinned.close()
    assert torch.get_num_threads() == 2


def test_threads_setting_is_validated():
    assert load_config("tiny", ["pretrain.threads=2"]).pretrain.threads == 2
    assert load_config("tiny", []).finetune.threads == "auto"
    with pytest.raises(ConfigError, match="threads"):
        load_config("tiny", ["pretrain.threads=0"])
    with pytest.raises(ConfigError, match="threads"):
        load_config("tiny", ["finetune.threads=many"])


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.exists("/proc/stat"), reason="needs 2 cores and /proc/stat")
def test_a_real_busy_process_takes_a_thread_away_and_gives_it_back(threads_back):
    torch.set_num_threads(2)
    gov = ThreadGovernor("auto", interval=0.5)
    if gov.threads < 2:
        pytest.skip("other processes already keep a core busy")
    rival = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2.0)
        assert gov.step() == 1
    finally:
        rival.kill()
        rival.wait()
    time.sleep(1.5)
    assert gov.step() == 2

"""The C allocator while training on a CPU: mlm_pretrain.hardware.HeapReuse (pretrain.malloc / finetune.malloc)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from mlm_pretrain import hardware
from mlm_pretrain.config import ConfigError, load_config
from mlm_pretrain.hardware import HeapReuse

FAULTS_SCRIPT = """
import json, resource, torch
from mlm_pretrain.hardware import HeapReuse

def rounds(n=5):
    faults = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(1 << 24)  # 64 MiB, as a step's logits chunk or embedding gradient
        t.fill_(1.0)
        del t
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults

plain = rounds()
heap = HeapReuse("auto")
kept = rounds()
heap.close()
print(json.dumps({"plain": plain, "kept": kept, "after": rounds(), "active": heap.active, **heap.summary()}))
"""


@pytest.mark.skipif(hardware._glibc() is None, reason="glibc's allocator only")
def test_freed_memory_is_reused_instead_of_faulted_in_again(plain_allocator):
    """Minor page faults of rounds that make, write and free a 64 MiB tensor, in a fresh process (a long-lived
    one's heap may be fragmented: glibc before 2.38 reuses a freed block for an aligned request of the same
    size only once it has merged with a free neighbour, as the blocks a training step frees do)."""
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    pages = (1 << 24) * 4 // resource.getpagesize()  # one tensor's pages
    if min(r["plain"]) < pages // 2:
        pytest.skip(f"this kernel backs fresh memory without a fault per page ({r['plain']} faults)")
    # every round faulted its 16,384 pages in afresh; kept, the heap grows once or twice, then the freed
    # block is the next round's
    assert all(f >= 0.9 * pages for f in r["plain"]), r
    assert sum(r["kept"][:2]) <= 2.2 * pages and all(f < 0.05 * pages for f in r["kept"][2:]), r
    assert all(f >= 0.9 * pages for f in r["after"]), r  # glibc's defaults are back after close()
    assert not r["active"] and r["malloc"] == "reuse" and r["malloc_reason"].startswith("reuse: freed blocks stay")


def test_what_the_allocator_setting_leaves_alone(plain_allocator, monkeypatch):
    assert not HeapReuse("system").active and HeapReuse("system").summary()["malloc"] == "system"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    heap = HeapReuse("auto")
    assert not heap.active and "another allocator is preloaded (/usr/lib/x86_64-linux-gnu/libjemalloc.so.2)" in heap.reason
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    heap = HeapReuse("auto")
    assert not heap.active and "MALLOC_* / GLIBC_TUNABLES variables already tune glibc" in heap.reason
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    assert not HeapReuse("auto").active
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(hardware, "_glibc", lambda: None)
    heap = HeapReuse("auto")
    assert not heap.active and heap.reason == "system: the C library is not glibc"
    heap.close()  # nothing to undo


def test_the_allocator_setting_is_validated():
    cfg = load_config("tiny", [])
    assert cfg.pretrain.malloc == "auto" and cfg.finetune.malloc == "auto"
    assert load_config("tiny", ["pretrain.malloc=system"]).pretrain.malloc == "system"
    with pytest.raises(ConfigError, match="malloc"):
        load_config("tiny", ["pretrain.malloc=jemalloc"])
    with pytest.raises(ConfigError, match="malloc"):
        load_config("tiny", ["finetune.malloc=reuse"])

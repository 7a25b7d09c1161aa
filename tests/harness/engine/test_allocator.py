"""harness.engine.allocator: glibc keeps freed batch-sized blocks for reuse on CPU runs (no fresh mmap and
its page faults per step), off with HARNESS_MALLOC=default, and run.json's provenance says which."""
import resource
import sys

import pytest
import torch

from harness.engine import allocator


def test_harness_malloc_default_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("HARNESS_MALLOC", "default")
    assert allocator.keep_freed_memory() is None and allocator.state() is None
    assert allocator.describe() == "default"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_batch_sized_tensor_is_reused_without_page_faults(monkeypatch):
    monkeypatch.delenv("HARNESS_MALLOC", raising=False)
    said = allocator.keep_freed_memory()
    assert said is not None and "M_MMAP_MAX=0" in said and allocator.state() == said
    assert allocator.describe() == said

    def faults_of_a_64mb_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(16 * 2**20, dtype=torch.float32)  # 64 MB: above glibc's largest mmap threshold
        x.fill_(1.0)
        del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = [faults_of_a_64mb_tensor() for _ in range(12)]  # the heap grows at the first
    # later ones reuse it: a fresh mmap (the C library's default) faults all 16,384 pages every time.
    # Not every one: a host that reclaims idle memory (this VM's DAMON) may take freed pages back.
    assert min(faults[1:]) < 1000, faults

"""The suite's own setup (tests/conftest.py): the cores each pytest-xdist worker runs on."""

import os

import pytest

from conftest import worker_cores


def test_workers_get_equal_blocks_of_the_cores_or_share_one_past_the_core_count():
  assert worker_cores([0, 1], "gw0", 2) == [0] and worker_cores([0, 1], "gw1", 2) == [1]
  assert worker_cores([0, 1, 2, 3, 4, 5, 6, 7], "gw1", 2) == [4, 5, 6, 7]
  assert worker_cores([2, 3, 5], "gw2", 3) == [5]
  assert [worker_cores([0, 1], f"gw{i}", 3) for i in range(3)] == [[0], [1], [0]]
  assert worker_cores([0, 1, 2, 3], "gw0", 1) == [0, 1, 2, 3]


PINNED = (bool(os.environ.get("PYTEST_XDIST_WORKER")) and hasattr(os, "sched_getaffinity")
          and os.environ.get("DARKJAX_TEST_SHARE_CORES") != "1")


@pytest.mark.skipif(not PINNED, reason="only a pytest-xdist worker is pinned (-n 0 is not)")
def test_this_worker_runs_on_its_own_cores():
  """Its block of the cores pytest's main process (this worker's parent) may use."""
  cores = sorted(os.sched_getaffinity(os.getppid()))
  assert os.sched_getaffinity(0) == set(worker_cores(
      cores, os.environ["PYTEST_XDIST_WORKER"], int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

"""Telling a live sweeper from a dead one, and one GPU per sweeper, with real processes and locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from helpers import ROOT, wait_for

from app.sweep import leases

HOLD = """\
import sys, time
from pathlib import Path
from app.sweep.leases import Sweeper
me = Sweeper(Path(sys.argv[1]))
print(me.id, flush=True)
time.sleep(600)
"""


def test_a_sweeper_is_alive_until_it_is_killed_and_then_its_lock_file_goes(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        other_id = other.stdout.readline().strip()
        me = leases.Sweeper(tmp_path)
        assert me.is_alive(me.id) and me.is_alive(other_id)
        assert not me.is_alive(None) and not me.is_alive("never-started")
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
        wait_for(lambda: not me.is_alive(other_id), 10, "the kernel to drop the dead sweeper's lock")
        assert sorted(p.name for p in (tmp_path / "sweepers").iterdir()) == [f"{me.id}.lock"]
        me.close()
        assert list((tmp_path / "sweepers").iterdir()) == []
    finally:
        other.kill()


def test_each_sweeper_keeps_a_gpu_of_its_own_and_extra_ones_share(tmp_path):
    # Each call opens its own lock file, as another process would: flock locks conflict between them.
    chosen = [leases.keep_one_gpu(tmp_path, 2, {}) for _ in range(3)]
    assert chosen[:2] == [0, 1] and chosen[2] in (0, 1)
    env = {}
    leases.keep_one_gpu(tmp_path / "other", 4, env)
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0"}
    # One GPU, or GPUs already chosen by the user: nothing to choose.
    assert leases.keep_one_gpu(tmp_path, 1, {}) is None
    assert leases.keep_one_gpu(tmp_path, 4, {"CUDA_VISIBLE_DEVICES": "2"}) is None

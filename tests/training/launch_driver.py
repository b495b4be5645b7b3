"""Run by tests/security/test_process_lifecycle.py: a real `train_and_commit` (store, temp
folder, job.json, worker launch) whose worker is a stand-in that starts a grandchild,
copies job.json, writes both pids to WORK_DIR/pids and sleeps.

    python tests/training/launch_driver.py MODEL_DIR WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from a2tgpo.config import RunConfig
from a2tgpo.data.directories import commit_directory
from a2tgpo.data.fakes import fake_trajectories
from a2tgpo.data.stage import write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.training import launcher

SLEEPER = """
import os, shutil, subprocess, sys, time
job, work = sys.argv[1:3]
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
shutil.copy(job, os.path.join(work, "job-copy.json"))
with open(os.path.join(work, "pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
os.rename(os.path.join(work, "pids.tmp"), os.path.join(work, "pids"))
time.sleep(600)
"""


def main(model_dir: str, work: str) -> None:
    config = RunConfig(storage={"root": str(Path(work) / "store")})
    storage = Storage(config.storage)
    commit_directory(storage, model_dir, storage.join("init"), policy_version=0)
    table = fake_trajectories(4, tokens=32, turns=2, schema_name="advantaged", vocab=64, seed=1)
    write_stage(storage, storage.join("adv"), table, "advantaged", policy_version=0)
    launcher.worker_commands = lambda _config, job_path: [
        ([sys.executable, "-c", SLEEPER, str(job_path), work], {})
    ]
    launcher.train_and_commit(
        config,
        advantaged_uri=storage.join("adv"),
        policy_uri=storage.join("init"),
        out_uri=storage.join("next"),
        policy_version=1,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

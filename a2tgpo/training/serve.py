"""The persistent trainer's worker loop: one process per rank, started once per flow run.

    python -m a2tgpo.training.serve CONTROL_DIR          (CPU, gloo)
    torchrun --nproc_per_node N -m a2tgpo.training.serve CONTROL_DIR   (GPUs)

The launcher side (`a2tgpo.training.persistent.PersistentTrainer`) talks to the ranks
through files in CONTROL_DIR, so that the same protocol works under torchrun, which
forwards no stdin to its children:

    job-000001.json          a TrainJob, written atomically (temp file + rename)
    started-000001-rank0     a rank took the job (a launcher that finds its workers dead
                             before any took it restarts them and resends the job)
    done-000001-rank0.json   each rank's answer: {"ok": true} or {"ok": false, "error"}
    stop                     every rank leaves its loop and exits 0

Each rank keeps its DeepSpeed engine (model and optimizer state) between jobs
(`worker.Resident`), so a step costs no process start, process-group set-up or
checkpoint load. A job whose input policy is not the one held is an error: the
launcher restarts the workers from the committed checkpoint instead. A rank whose step
fails answers with the error and exits (its collectives are no longer in step).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from a2tgpo.supervise import set_parent_death_signal
from a2tgpo.training.engine import init_distributed, offload_engine_states, on_gpu
from a2tgpo.training.worker import Resident, TrainJob, run

log = logging.getLogger("a2tgpo.train")
POLL_S = 0.05
STOP_FILE = "stop"


def job_file(control: Path, seq: int) -> Path:
    return control / f"job-{seq:06d}.json"


def done_file(control: Path, seq: int, rank: int) -> Path:
    return control / f"done-{seq:06d}-rank{rank}.json"


def started_file(control: Path, seq: int, rank: int) -> Path:
    return control / f"started-{seq:06d}-rank{rank}"


def write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def next_job(control: Path, seq: int) -> TrainJob | None:
    """Wait for job `seq`; None when the launcher asks the workers to stop."""
    path = job_file(control, seq)
    while not path.exists():
        if (control / STOP_FILE).exists():
            return None
        time.sleep(POLL_S)
    return TrainJob.model_validate_json(path.read_text())


def release(resident: Resident, job: TrainJob) -> None:
    """Offload the engine's states to CPU memory until the next step (GPUs only: on CPU
    they are in CPU memory already)."""
    if job.config.pipeline.release_trainer_memory and on_gpu():
        offload_engine_states(resident.engine)
        resident.released = True


def serve(control: Path) -> None:
    """Answer jobs 1, 2, ... until the stop file appears."""
    rank, _ = init_distributed()
    resident: Resident | None = None
    seq = 0
    while (job := next_job(control, seq + 1)) is not None:
        seq += 1
        started_file(control, seq, rank).write_text("")
        try:
            _, resident = run(job, resident)
            release(resident, job)
        except BaseException:
            answer = {"ok": False, "error": traceback.format_exc()[-8000:]}
            write_atomically(done_file(control, seq, rank), json.dumps(answer))
            raise
        write_atomically(done_file(control, seq, rank), json.dumps({"ok": True}))
    torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    set_parent_death_signal(signal.SIGKILL)  # torchrun's children: see worker.main
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(Path((argv if argv is not None else sys.argv[1:])[0]))


if __name__ == "__main__":
    main()

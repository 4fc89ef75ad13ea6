"""Reliability: kill/resume trials, checkpoint corruption, bad input everywhere, DDP rank death."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from damp.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from damp.cli import main
from damp.config import load_config
from damp.data.cifar import write_cifar_fixture
from damp.data.idx import write_idx
from damp.train import train
from tests.conftest import REPO
from tests.methods.test_ddp import free_port

RUN = ["--set", "trainer.device=cpu", "--set", "trainer.progress=false", "--set", "data.batch_size=64",
       "--set", "trainer.max_steps=30", "--set", "trainer.checkpoint_every=4", "--set", "trainer.log_every=2",
       "--set", "eval.corruptions=none", "--set", "model.dropout=0.2"]
METHOD = {"damp": ["--set", "method.name=damp", "--set", "method.std=0.2", "--set", "method.num_perturbations=4"],
          "sam": ["--set", "method.name=sam", "--set", "method.rho=0.05", "--set", "method.num_perturbations=2"]}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "damp.cli", "train", *args]


def rows(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def assert_same_state(a: dict, b: dict) -> None:
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            other = b["optimizer"]["state"][pid][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert a["step"] == b["step"] and a["method"] == b["method"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["damp", "sam"])
def test_sigkill_at_random_steps_then_resume_is_bit_identical(method, tmp_path):
    reference = tmp_path / "reference"
    done = subprocess.run(cli(*RUN, *METHOD[method], "--out", str(reference)), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = load_checkpoint(reference / "last.pt")
    trials = random.Random(f"kill-{method}")
    for trial in range(2):
        run = tmp_path / f"killed{trial}"
        target = trials.randint(1, 12)  # kill once this many metrics rows (2 steps each) exist
        proc = subprocess.Popen(cli(*RUN, *METHOD[method], "--out", str(run)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and rows(run / "metrics.jsonl") < target and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = rows(run / "metrics.jsonl") * 2
        resumed = subprocess.run(cli(*RUN, *METHOD[method], "--out", str(run), "--resume"), capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, f"killed near step {killed_at}: {resumed.stderr[-2000:]}"
        assert_same_state(expected, load_checkpoint(run / "last.pt"))
        assert (run / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
        assert json.loads((run / "results.json").read_text())["clean"] == \
            json.loads((reference / "results.json").read_text())["clean"]


def test_checkpoint_truncated_foreign_and_fallback(tmp_path):
    save_checkpoint(tmp_path, {"model": {"w": torch.ones(3)}, "step": 1})
    save_checkpoint(tmp_path, {"model": {"w": torch.zeros(3)}, "step": 2})
    assert load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(tmp_path / "last.pt")):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "foreign.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"something": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a damp checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "last.pt").unlink()
    assert find_checkpoint(tmp_path) == tmp_path / "previous.pt"


def test_resume_after_a_kill_before_the_first_checkpoint_starts_over(tmp_path):
    cfg = load_config(None, ["trainer.progress=false", "trainer.max_steps=2", "eval.corruptions=none"])
    (tmp_path / "run").mkdir()
    from damp.config import dump_config
    dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert train(cfg, tmp_path / "run", resume=True)["meta"]["steps"] == 2


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Files and folders for the bad-input table."""
    root = tmp_path_factory.mktemp("bad")
    (root / "config_typo.yaml").write_text("trainer:\n  epochz: 3\n")
    (root / "config_yaml.yaml").write_text("trainer: [1, 2\n")
    (root / "config_list.yaml").write_text("- a\n- b\n")
    (root / "fm").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        write_idx(root / "fm" / f"{stem}.gz", np.zeros((4, 28, 28) if "images" in stem else (4,)))
    (root / "fm" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    write_cifar_fixture(root / "cifar", np.zeros((4, 3, 32, 32), np.uint8), np.array([0, 1, 2, 12]))
    (root / "cifar_pickle").mkdir()
    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (root / "cifar_pickle" / f).write_bytes(b"\x80\x04 not a pickle")
    (root / "npy").mkdir()
    np.save(root / "npy" / "fog.npy", np.zeros((10, 32, 32), np.uint8))
    np.save(root / "npy" / "labels.npy", np.zeros(10, np.uint8))
    for split in ("train", "val"):
        (root / "inet" / split / "n01").mkdir(parents=True)
        from PIL import Image
        Image.new("RGB", (40, 40)).save(root / "inet" / split / "n01" / "ok.JPEG")
        (root / "inet" / split / "n01" / "broken.JPEG").write_bytes(b"\xff\xd8 truncated jpeg")
    run = root / "run"
    train(load_config(None, ["trainer.progress=false", "trainer.max_steps=1", "eval.corruptions=none"]), run)
    (root / "truncated.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    (root / "foreign.pt").write_text("hello")
    other = root / "other"
    train(load_config(None, ["trainer.progress=false", "trainer.max_steps=1", "eval.corruptions=none",
                             "model.name=mlp"]), other)
    (root / "keep").mkdir()
    (root / "keep" / "precious.txt").write_text("user data")
    return root


T = ["train", "--set", "trainer.progress=false", "--set", "trainer.max_steps=1", "--set", "eval.corruptions=none"]
CASES = [
    # (id, argv with {root} / {out} placeholders, expected text in the one-line error)
    ("unknown key", [*T, "--set", "trainer.epochz=3", "--out", "{out}"], "did you mean 'trainer.epochs'"),
    ("unknown key in file", ["train", "--config", "{root}/config_typo.yaml", "--out", "{out}"], "trainer.epochz"),
    ("unknown section", [*T, "--set", "optimizer.lr=1", "--out", "{out}"], "did you mean 'optim'"),
    ("wrong type int", [*T, "--set", "trainer.epochs=three", "--out", "{out}"], "expected an integer"),
    ("wrong type bool", [*T, "--set", "trainer.compile=maybe", "--out", "{out}"], "expected true or false"),
    ("wrong type section", [*T, "--set", "data=5", "--out", "{out}"], "expected a section"),
    ("negative std", [*T, "--set", "method.name=damp", "--set", "method.std=-0.1", "--out", "{out}"], "method.std"),
    ("missing std", [*T, "--set", "method.name=damp", "--out", "{out}"], "required for method 'damp'"),
    ("std for sam", [*T, "--set", "method.name=sam", "--set", "method.rho=0.1", "--set", "method.std=0.1",
                     "--out", "{out}"], "not a hyperparameter of 'sam'"),
    ("batch not divisible by M", [*T, "--set", "method.name=damp", "--set", "method.std=0.1", "--set",
                                  "method.num_perturbations=7", "--out", "{out}"], "not divisible"),
    ("lr zero", [*T, "--set", "optim.lr=0", "--out", "{out}"], "optim.lr"),
    ("dropout one", [*T, "--set", "model.dropout=1", "--out", "{out}"], "model.dropout"),
    ("eval severity 6", [*T, "--set", "eval.severities=[6]", "--out", "{out}"], "eval.severities"),
    ("unknown method", [*T, "--set", "method.name=dampp", "--out", "{out}"], "did you mean 'damp'"),
    ("unknown model", [*T, "--set", "model.name=resnet19", "--out", "{out}"], "did you mean 'resnet18'"),
    ("unknown dataset", [*T, "--set", "data.name=mnist", "--out", "{out}"], "data.name"),
    ("unknown eval corruption", [*T, "--set", "eval.corruptions=fogg", "--out", "{out}"], "did you mean 'fog'"),
    ("unknown train corruption", [*T, "--set", "data.train_corruption=blur", "--out", "{out}"], "train_corruption"),
    ("bad yaml", ["train", "--config", "{root}/config_yaml.yaml", "--out", "{out}"], "not valid YAML"),
    ("yaml not a mapping", ["train", "--config", "{root}/config_list.yaml", "--out", "{out}"], "mapping"),
    ("missing config", ["train", "--config", "{root}/nope.yaml", "--out", "{out}"], "config file not found"),
    ("set without =", [*T, "--set", "trainer.epochs", "--out", "{out}"], "key=value"),
    ("missing data folder", [*T, "--set", "data.name=fashion_mnist", "--set", "data.root={root}/nothing",
                             "--out", "{out}"], "not found"),
    ("malformed idx", [*T, "--set", "data.name=fashion_mnist", "--set", "data.root={root}/fm", "--out", "{out}"],
     "t10k-labels-idx1-ubyte.gz"),
    ("cifar label out of range", [*T, "--set", "data.name=cifar10", "--set", "data.root={root}/cifar",
                                  "--out", "{out}"], "labels outside"),
    ("cifar not a pickle", [*T, "--set", "data.name=cifar10", "--set", "data.root={root}/cifar_pickle",
                            "--out", "{out}"], "data_batch_1"),
    ("cifar without root", [*T, "--set", "data.name=cifar10", "--out", "{out}"], "needs a root"),
    ("undecodable image", [*T, "--set", "data.name=imagenet", "--set", "data.root={root}/inet", "--set",
                           "data.num_workers=0", "--set", "data.batch_size=2", "--set", "data.image_size=32",
                           "--out", "{out}"], "broken.JPEG"),
    ("npy wrong shape", ["evaluate", "{root}/run", "--c-dir", "{root}/npy", "--corruptions", "fog",
                         "--out", "{out}.json"], "fog.npy"),
    ("truncated checkpoint", ["evaluate", "{root}/truncated.pt", "--out", "{out}.json"], "truncated.pt"),
    ("foreign checkpoint", ["evaluate", "{root}/foreign.pt", "--out", "{out}.json"], "foreign.pt"),
    ("checkpoint of another model", [*T, "--set", "trainer.max_steps=2", "--out", "{root}/other", "--resume"],
     "model.name: 'mlp' in the checkpoint"),
    ("resume without checkpoint", [*T, "--out", "{root}/keep", "--resume"], "no checkpoint"),
    ("non-empty train dir", [*T, "--out", "{root}/keep"], "not empty"),
    ("non-empty corrupt dir", ["corrupt", "--data", "digits", "--out", "{root}/keep"], "--overwrite"),
    ("unknown corruption", ["corrupt", "--data", "digits", "--corruptions", "fogg", "--out", "{out}"],
     "Unknown corruption"),
    ("existing evaluation file", ["evaluate", "{root}/run", "--out", "{root}/keep/precious.txt"], "exists"),
    ("report of a non-run", ["report", "{root}/keep", "--out", "{out}"], "no evaluation.json"),
    ("report of a missing directory", ["report", "{root}/nothing", "--out", "{out}"], "no such run directory"),
    ("unknown corrupt dataset", ["corrupt", "--data", "mnist", "--out", "{out}"], "cifar100, folder"),
    ("ImageNet variant on digits", ["evaluate", "{root}/run", "--imagenet-a", "{root}/inet/val", "--out",
                                    "{out}.json"], "ImageNet-trained"),
    ("unknown demo method", ["demo", "--methods", "sgd,adam", "--out", "{out}"], "Unknown demo method"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_nonzero_and_loses_nothing(case, bad, tmp_path, capsys):
    _, argv, expected = case
    argv = [a.format(root=bad, out=tmp_path / "out") for a in argv]
    code = main(argv)
    err = capsys.readouterr().err.split("\r")[-1].strip()  # what a terminal shows once the bar is erased
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert (bad / "keep" / "precious.txt").read_text() == "user data"
    assert load_checkpoint(bad / "other" / "last.pt")["step"] == 1  # untouched by the refused resume


@pytest.mark.parametrize("argv,expected", [
    (["evaluate", "{empty}"], "no checkpoint"),
    (["sweep", "--config", str(REPO / "configs/digits_small_cnn/damp.yaml"), "--grid", "method.std=0.1",
      "--final-seeds", "2", "--fresh-seeds", "2", "--out", "{out}"], "give one"),
])
def test_a_fast_failure_draws_no_progress_bar(argv, expected, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main([a.format(empty=tmp_path / "empty", out=tmp_path / "out") for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "\r" not in err and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_skip_bad_images_counts_instead_of_failing(bad, tmp_path):
    cfg = load_config(None, ["trainer.progress=false", "trainer.max_steps=1", "eval.corruptions=none",
                             "data.name=imagenet", f"data.root={bad}/inet", "data.num_workers=0", "data.batch_size=1",
                             "data.image_size=32", "data.skip_bad_images=true"])
    assert train(cfg, tmp_path / "run")["meta"]["skipped_images"] == 2


@pytest.mark.slow
def test_ddp_rank_death_ends_the_run_in_bounded_time(tmp_path):
    worker = REPO / "tests" / "ddp_die_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(worker), str(tmp_path / "run")]
    start = time.time()
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "DAMP_DDP_TIMEOUT": "30"},
                          capture_output=True, text=True, timeout=120)
    elapsed = time.time() - start
    assert done.returncode != 0
    assert elapsed < 60, f"the surviving rank took {elapsed:.0f}s to exit"


QUICK_RUN = ["trainer.device=cpu", "trainer.progress=false", "trainer.max_steps=4", "trainer.checkpoint_every=2",
             "eval.corruptions=none", "data.batch_size=64"]


def test_resume_falls_back_to_previous_pt_with_one_warning(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(None, QUICK_RUN)
    reference = train(cfg, tmp_path / "reference")
    train(load_config(None, [*QUICK_RUN, "trainer.max_steps=2", "trainer.checkpoint_every=1"]), out)
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:100])  # step 2, truncated; previous.pt: step 1
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", *[f"--set={s}" for s in QUICK_RUN]]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in err if "previous.pt" in line]
    assert len(warning) == 1 and "last.pt" in warning[0] and "step 1" in warning[0], err
    assert json.loads((out / "results.json").read_text())["clean"] == reference["clean"]


def test_resume_with_no_readable_checkpoint_stops_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    train(load_config(None, [*QUICK_RUN, "trainer.max_steps=2", "trainer.checkpoint_every=1"]), out)
    for name in ("last.pt", "previous.pt"):
        (out / name).write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", *[f"--set={s}" for s in QUICK_RUN]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no readable checkpoint" in err and "previous.pt" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_with_another_method_names_the_first_difference(tmp_path):
    out = tmp_path / "run"
    train(load_config(None, [*QUICK_RUN, "trainer.max_steps=2"]), out)
    with pytest.raises(CheckpointError, match="method.name: 'sgd' in the checkpoint, 'damp' here"):
        train(load_config(None, [*QUICK_RUN, "method.name=damp", "method.std=0.1"]), out, resume=True)
    # The method's hyperparameters may change (e.g. a smaller std after a non-finite loss): no refusal.


@pytest.mark.parametrize("target", ["checkpoint", "results"])
def test_a_failed_write_names_the_file_and_keeps_the_previous_one(target, tmp_path, monkeypatch, capsys):
    import errno

    import damp.checkpoint as checkpoint

    out = tmp_path / "run"
    train(load_config(None, [*QUICK_RUN, "trainer.max_steps=2"]), out)
    kept = {name: (out / name).read_bytes() for name in ("last.pt", "results.json")}
    real_fsync = os.fsync
    victim = "last.pt.tmp" if target == "checkpoint" else "results.json.tmp"

    def failing_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(victim):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    capsys.readouterr()
    code = main(["train", "--out", str(out), "--resume", *[f"--set={s}" for s in QUICK_RUN]])
    err = capsys.readouterr().err.strip()
    name = "last.pt" if target == "checkpoint" else "results.json"
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot write {out / name}: No space left on device" in err, err
    assert not list(out.glob("*.tmp"))
    assert (out / "results.json").read_bytes() == kept["results.json"]
    if target == "checkpoint":
        assert load_checkpoint(out / "last.pt")["step"] == 2  # the previous checkpoint is intact


def test_benchmark_and_evaluate_refuse_bad_models_and_labels_at_once():
    from torch import nn

    from damp.robustness import benchmark

    images = torch.rand(8, 3, 32, 32)
    labels = torch.randint(0, 10, (8,))

    class Broken(nn.Module):
        def __init__(self, make):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.make = make

        def forward(self, x):
            return self.make(x) * self.scale

    cases = [
        (Broken(lambda x: torch.zeros(len(x), 10).fill_(float("nan"))), labels, "non-finite logits"),
        (Broken(lambda x: torch.zeros(len(x), 10, 2)), labels, r"expected \(2, classes\) logits"),
        (Broken(lambda x: torch.zeros(len(x) + 1, 10)), labels, r"expected \(2, classes\) logits"),
        (Broken(lambda x: torch.zeros(len(x), 5)), labels.clamp(7, 9), r"labels: class indices must be in \[0, 4\]"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10)), labels, "does it take 3-channel"),
    ]
    for model, y, message in cases:
        start = __import__("time").time()
        with pytest.raises(ValueError, match=message):
            benchmark(model, images, y, corruptions="all")
        assert __import__("time").time() - start < 5  # before any corruption is generated
    from damp.evaluate import check_model
    with pytest.raises(ValueError, match="returns 5 logits per image, but the data has 10 classes"):
        check_model(Broken(lambda x: torch.zeros(len(x), 5)), images, labels.clamp(0, 4), num_classes=10)

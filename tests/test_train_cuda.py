"""GPU trainer (trainer/cuda) against the CPU reference, and `pixelmill train --device cuda`.

Every test skips, with the reason printed, when there is no usable GPU (nvidia-smi missing,
or the build has no CUDA, or cudaGetDeviceCount() is 0: `pm_cuda_check status` exits 77).
On a GPU machine bench/train-gpu/device_run.sh runs them (docs/trainer.md, GPU trainer).
"""
import shutil
import signal
import subprocess

import pytest

from conftest import run, tool
from test_train import ENV, dataset, final_weights, read_safetensors  # noqa: F401

import numpy as np


def gpu_reason():
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found: no NVIDIA driver on this machine"
    try:
        r = run([tool("pm_cuda_check"), "status"], check=False, timeout=120)
    except FileNotFoundError as e:
        return str(e)
    if r.returncode == 77:
        return r.stdout.strip()
    if r.returncode != 0:
        return f"pm_cuda_check status failed: {r.stderr.strip()}"
    return None


REASON = gpu_reason()
if REASON:
    print(f"\nGPU tests skipped: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no GPU: {REASON}")


def check(*args, timeout=600):
    r = run([tool("pm_cuda_check"), *[str(a) for a in args]], check=False, timeout=timeout)
    print(r.stdout)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "FAIL" not in r.stdout
    return r.stdout


@pytest.mark.parametrize("config,batch", [("test-16", 4), ("tiny-32", 8), ("small-64", 4)])
def test_gradients_fp32(config, batch):
    check("grads", config, batch, "fp32")


@pytest.mark.parametrize("config,batch", [("tiny-32", 8)])
def test_gradients_bf16(config, batch):
    check("grads", config, batch, "bf16")


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_full_step(prec):
    check("step", "tiny-32", 8, prec)


def test_loss_tracks_cpu_50_steps():
    check("loss", "tiny-32", 8, 50, "fp32")


def test_resume_bitwise(tmp_path):
    check("resume", "tiny-32", 8, 6, "fp32", tmp_path / "ck")


def test_two_ranks_equal_one():
    check("ranks", "tiny-32", 8, 3, "fp32")


TRAIN = ["--model", "test-16", "--steps", 6, "--batch-size", 4, "--lr", 1e-3, "--seed", 7,
         "--ema-decay", 0.9, "--loader-threads", 1]


def train(data, ck, extra=(), steps=6):
    args = [str(a) for a in [tool("pixelmill"), "train", "--data", data, "--checkpoint-dir", ck,
                             *TRAIN, "--device", "cuda", *extra]]
    args[args.index("--steps") + 1] = str(steps)
    return args


# The stop tests run long enough (a GPU step of test-16 takes milliseconds) that the signal
# lands while the run is still going.
LONG = 400


def test_pixelmill_train_cuda_resume_matches_straight(dataset, tmp_path):  # noqa: F811
    """--device cuda --precision fp32: SIGTERM after step 2, exit 75, resume == straight
    (safetensors bitwise: deterministic kernels on one GPU)."""
    run(train(dataset, tmp_path / "a", ["--precision", "fp32"], LONG), env=ENV)
    p = subprocess.Popen(train(dataset, tmp_path / "b", ["--precision", "fp32"], LONG),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in p.stdout:
        if line.startswith("step 2/"):
            p.send_signal(signal.SIGTERM)
            break
    out, err = p.communicate(timeout=300)
    assert p.returncode == 75, (out, err)
    r = run(train(dataset, tmp_path / "b", ["--precision", "fp32", "--resume", "auto"], LONG),
            env=ENV)
    assert "resumed from" in r.stderr
    wa = read_safetensors(final_weights(tmp_path / "a", LONG))
    wb = read_safetensors(final_weights(tmp_path / "b", LONG))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k


def test_gpu_checkpoint_resumes_on_cpu(dataset, tmp_path):  # noqa: F811
    """3 steps on the GPU (fp32), then 3 more on the CPU from its checkpoint: close to 6 CPU
    steps (the GPU sums in another order: within rounding, as np 1 vs np 2 on the CPU)."""
    ck = tmp_path / "g"
    run(train(dataset, ck, ["--precision", "fp32"], 3), env=ENV)
    cpu = [a for a in train(dataset, ck, ["--resume", "auto"]) if a not in ("--device", "cuda")]
    r = run(cpu + ["--device", "cpu"], env=ENV)
    assert "resumed from" in r.stderr
    ref = [a for a in train(dataset, tmp_path / "c") if a not in ("--device", "cuda")]
    run(ref, env=ENV)
    wg = read_safetensors(final_weights(ck))
    wc = read_safetensors(final_weights(tmp_path / "c"))
    total = off = 0
    for k in wc:
        d = np.abs(wg[k] - wc[k])
        # as test_train.py's np 1 vs np 2: Adam moves weights whose gradient is ~0 by
        # ~lr*sign(g), and rounding can flip a few
        assert d.max() <= 2 * 6 * 1e-3, k
        off += int((d > 1e-5).sum())
        total += d.size
    assert off <= total * 1e-3, (off, total)


def test_pixelmill_train_cuda_sigkill_resume(dataset, tmp_path):  # noqa: F811
    """Hard preemption: SIGKILL after step 3 with --checkpoint-every 2; the resume from the
    last checkpoint ends with the straight run's weights, bit for bit (deterministic kernels
    on one GPU)."""
    extra = ["--precision", "fp32", "--checkpoint-every", "2", "--keep", "1000"]
    run(train(dataset, tmp_path / "a", extra, LONG), env=ENV)
    p = subprocess.Popen(train(dataset, tmp_path / "b", extra, LONG), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    for line in p.stdout:
        if line.startswith("step 3/"):
            p.kill()
            break
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    killed_at = int((tmp_path / "b" / "latest").read_text().strip().split("-")[1])
    assert 2 <= killed_at < LONG
    r = run(train(dataset, tmp_path / "b", extra + ["--resume", "auto"], LONG), env=ENV)
    assert "resumed from" in r.stderr
    wa = read_safetensors(final_weights(tmp_path / "a", LONG))
    wb = read_safetensors(final_weights(tmp_path / "b", LONG))
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k

#!/usr/bin/env python3
"""Training throughput on CPU: our C reference (pm_trainer_tool bench) vs the PyTorch
reference model (bench/train-ref/unet_ref.py), same config, batch and thread count.

  bench/train-cpu/bench.py [--config tiny-32] [--batch 32] [--steps 3] [--threads 2]
                           [--build build]

Each side runs one warm-up step, then `steps` timed steps of forward + backward + AdamW +
EMA on a synthetic batch with captions, in its own process. The two alternate `--repeat`
times (default 5) so that both see the same machine load; the report gives the median
images/s (wall clock) and images per CPU-second (process CPU time: on a shared machine the
steadier measure of per-core speed) of each, and the ratios of the medians. Needs torch
(not a CI dependency). Numbers depend on the machine and on what else runs on it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def bench_c(args):
    tool = os.path.join(args.build, "pm_trainer_tool")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([tool, "bench", args.config, str(args.batch), str(args.steps)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_torch(args):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "bench", "train-ref"))
    import unet_ref

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = unet_ref.CONFIGS[args.config]
    model = unet_ref.UNet(cfg)
    opt = unet_ref.make_optimizer(model, 1e-3, (0.9, 0.999), 1e-8, 0.0)
    ema = [p.detach().clone() for p in model.parameters()]
    B, S, C = args.batch, cfg["image_size"], cfg["in_channels"]
    caps = ["a photo of a red fox in the snow", "", "Two CATS, sleeping.",
            "night sky over the mountains"]
    tokens = [unet_ref.caption_tokens(caps[b % 4], cfg["cap_buckets"]) for b in range(B)]
    x0 = torch.rand(B, C, S, S) * 2 - 1
    ab = unet_ref.alphas_cumprod()
    t0 = c0 = 0.0
    for s in range(args.steps + 1):
        if s == 1:
            t0, c0 = time.perf_counter(), time.process_time()
        t = torch.randint(0, 1000, (B,))
        noise = torch.randn_like(x0)
        xt = (torch.sqrt(ab[t]).float()[:, None, None, None] * x0 +
              torch.sqrt(1 - ab[t]).float()[:, None, None, None] * noise)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(xt, t, tokens), noise)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.9999)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"impl": "pytorch", "torch": torch.__version__, "config": args.config,
            "batch": B, "steps": args.steps, "threads": torch.get_num_threads(),
            "sec_per_step": dt / args.steps, "img_per_s": B * args.steps / dt,
            "cpu_sec_per_step": dc / args.steps, "img_per_cpu_s": B * args.steps / dc,
            "loss": float(loss.detach())}


def run_torch(args):
    """bench_torch in a fresh process with the thread count in its environment."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-only", "--config", args.config,
           "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_only:
        print(json.dumps(bench_torch(args)))
        return
    runs = {"c": [], "pytorch": []}
    for _ in range(args.repeat):  # alternate, so both see the same load
        for impl, fn in (("c", bench_c), ("pytorch", run_torch)):
            r = fn(args)
            print(json.dumps(r), flush=True)
            runs[impl].append(r)
    med = {impl: {k: statistics.median(r[k] for r in rs) for k in ("img_per_s", "img_per_cpu_s")}
           for impl, rs in runs.items()}
    c, t = med["c"], med["pytorch"]
    print(f"{args.config} batch {args.batch}, {args.threads} threads, median of {args.repeat}: "
          f"C {c['img_per_s']:.2f} img/s ({c['img_per_cpu_s']:.2f} img/CPU-s), PyTorch "
          f"{t['img_per_s']:.2f} img/s ({t['img_per_cpu_s']:.2f} img/CPU-s); C/PyTorch = "
          f"{c['img_per_s'] / t['img_per_s']:.3f} wall, "
          f"{c['img_per_cpu_s'] / t['img_per_cpu_s']:.3f} per CPU-second")


if __name__ == "__main__":
    main()

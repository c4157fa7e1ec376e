#!/usr/bin/env python3
"""Training throughput on one GPU: our CUDA trainer (pm_cuda_check bench) vs PyTorch eager
and torch.compile of the same UNet (bench/train-ref/unet_ref.py; bf16 autocast, fused
AdamW, EMA), same config, batch and GPU, in the same run; plus FLOPs and MFU.

  bench/train-gpu/bench.py [--runs tiny-32:256,small-64:128] [--steps 20] [--warmup 5]
                           [--tool build/pm_cuda_check] [--no-torch] [--no-compile]
                           [--json OUT.json]

FLOPs per image are counted analytically from the architecture (convolutions, attention
matmuls and linears, multiply-add = 2 FLOPs; training = 3 x forward) and, when torch is
there, cross-checked with torch.utils.flop_counter on the reference model. MFU = images/s x
FLOPs/image / the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s). The PyTorch model
takes captions as padded token ids (a vectorised caption bag, same math as unet_ref.py's
per-sample loop, which would otherwise dominate a GPU step).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "H100 PCIe": 756.0e12, "A100": 312.0e12}

CONFIGS = {
    "tiny-32": dict(image_size=32, in_channels=3, channels=64, mult=[1, 2, 2], num_res_blocks=2,
                    attn_resolution=16, cap_dim=128),
    "small-64": dict(image_size=64, in_channels=3, channels=64, mult=[1, 2, 2, 2],
                     num_res_blocks=2, attn_resolution=16, cap_dim=128),
    "test-16": dict(image_size=16, in_channels=3, channels=32, mult=[1, 2], num_res_blocks=2,
                    attn_resolution=8, cap_dim=32),
}


def flops_per_image(cfg):
    """Training FLOPs of one image (3 x forward), walking the architecture as unet.c."""
    f = 0
    ch, td = cfg["channels"], 4 * cfg["channels"]

    def conv(cin, cout, hw, k=3):
        return 2 * cout * cin * k * k * hw * hw

    def res(cin, cout, hw):
        x = conv(cin, cout, hw) + conv(cout, cout, hw) + 2 * td * cout
        return x + (conv(cin, cout, hw, 1) if cin != cout else 0)

    def attn(c, hw):
        n = hw * hw
        return 2 * 3 * c * c * n + 2 * n * n * c * 2 + 2 * c * c * n

    f += 2 * ch * td + 2 * td * td + 2 * cfg["cap_dim"] * td
    H = cfg["image_size"]
    f += conv(cfg["in_channels"], ch, H)
    skips, cur = [ch], ch
    for i, m in enumerate(cfg["mult"]):
        co = ch * m
        for _ in range(cfg["num_res_blocks"]):
            f += res(cur, co, H)
            cur = co
            if H == cfg["attn_resolution"]:
                f += attn(cur, H)
            skips.append(cur)
        if i != len(cfg["mult"]) - 1:
            f += conv(cur, cur, H // 2)  # stride 2: output side H/2
            H //= 2
            skips.append(cur)
    f += 2 * res(cur, cur, H) + attn(cur, H)
    for i in reversed(range(len(cfg["mult"]))):
        co = ch * cfg["mult"][i]
        for _ in range(cfg["num_res_blocks"] + 1):
            f += res(cur + skips.pop(), co, H)
            cur = co
            if H == cfg["attn_resolution"]:
                f += attn(cur, H)
        if i != 0:
            H *= 2
            f += conv(cur, cur, H)
    f += conv(cur, cfg["in_channels"], H)
    return 3 * f


def peak_for(name):
    for k in sorted(PEAK_BF16, key=len, reverse=True):
        if k in name:
            return PEAK_BF16[k]
    return None


def bench_ours(tool, config, batch, steps, prec):
    r = subprocess.run([tool, "bench", config, str(batch), str(steps), prec],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return {"error": (r.stdout + r.stderr)[-400:]}
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def bench_torch(config, batch, steps, warmup, compiled):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "bench", "train-ref"))
    import unet_ref

    class FastUNet(unet_ref.UNet):
        def caption_vectors(self, tokens):
            ids, mask, empty = tokens
            v = (self.cap.table[ids] * mask[..., None]).sum(1)
            v = v / mask.sum(1, keepdim=True).clamp(min=1.0)
            return torch.where(empty[:, None], self.cap.null[None, :], v)

    dev = "cuda"
    torch.manual_seed(0)
    cfg = unet_ref.CONFIGS[config]
    model = FastUNet(cfg).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": no_decay, "weight_decay": 0.0}], lr=2e-4, fused=True)
    ema = [p.detach().clone() for p in model.parameters()]
    B, S, C = batch, cfg["image_size"], cfg["in_channels"]
    caps = ["a red circle on a blue background", "", "a green square", "two yellow triangles"]
    toks = [unet_ref.caption_tokens(caps[b % 4], cfg["cap_buckets"]) for b in range(B)]
    T = max(1, max(len(t) for t in toks))
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T)
    for b, t in enumerate(toks):
        ids[b, :len(t)] = torch.tensor(t, dtype=torch.long)
        mask[b, :len(t)] = 1
    tokens = (ids.to(dev), mask.to(dev), (mask.sum(1) == 0).to(dev))
    x0 = (torch.rand(B, C, S, S, device=dev) * 2 - 1)
    ab = unet_ref.alphas_cumprod().to(dev)

    def loss_fn(xt, t, noise):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(xt, t, tokens)
        return F.mse_loss(out.float(), noise)

    fn = torch.compile(loss_fn) if compiled else loss_fn
    t_compile = time.perf_counter()
    for s in range(warmup + steps):
        if s == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            if compiled:
                t_compile = t0 - t_compile
        t = torch.randint(0, 1000, (B,), device=dev)
        noise = torch.randn_like(x0)
        xt = (torch.sqrt(ab[t]).float()[:, None, None, None] * x0 +
              torch.sqrt(1 - ab[t]).float()[:, None, None, None] * noise)
        opt.zero_grad(set_to_none=True)
        loss = fn(xt, t, noise)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.9999)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"images_per_second": B * steps / dt, "loss": float(loss.detach()),
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    if compiled:
        out["compile_and_warmup_s"] = t_compile
    return out


def torch_flops(config):
    """FLOPs of one training step per image by torch.utils.flop_counter (cross-check)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    sys.path.insert(0, os.path.join(ROOT, "bench", "train-ref"))
    import unet_ref
    cfg = unet_ref.CONFIGS[config]
    model = unet_ref.UNet(cfg)
    B = 2
    x = torch.randn(B, cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    with FlopCounterMode(display=False) as fc:
        model(x, torch.tensor([1, 500]), [[1, 2], []]).square().mean().backward()
    return fc.get_total_flops() / B


def print_table(rows):
    gpu = next((r["ours_bf16"].get("gpu", "") for r in rows if "gpu" in r["ours_bf16"]), "")
    peak = peak_for(gpu)
    print()
    print(f"GPU: {gpu or 'unknown'}; MFU against dense bf16 peak "
          f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
    print(f"{'config':10} {'batch':>5} {'GFLOP/img':>9} {'impl':16} {'img/s':>10} {'MFU':>6} "
          f"{'vs eager':>9} {'vs compile':>10}")
    for r in rows:
        comp = r.get("torch_compile", {}).get("images_per_second")
        eager = r.get("torch_eager", {}).get("images_per_second")
        for key in ("ours_bf16", "ours_fp32", "torch_eager", "torch_compile"):
            v = r.get(key)
            if v is None:
                continue
            ips = v.get("images_per_second")
            if ips is None:
                print(f"{r['config']:10} {r['batch']:>5} {r['flops_per_image'] / 1e9:>9.2f} "
                      f"{key:16} {'error':>10}")
                continue
            mfu = ips * r["flops_per_image"] / peak if peak else float("nan")
            ratio = f"{ips / comp:.2f}x" if comp else "-"
            re = f"{ips / eager:.2f}x" if eager else "-"
            print(f"{r['config']:10} {r['batch']:>5} {r['flops_per_image'] / 1e9:>9.2f} "
                  f"{key:16} {ips:>10.1f} {100 * mfu:>5.1f}% {re:>9} {ratio:>10}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="tiny-32:256,small-64:128")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tool", default=os.path.join(ROOT, "build", "pm_cuda_check"))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch
            have_torch = torch.cuda.is_available()
            if not have_torch:
                print("PyTorch comparison skipped: torch sees no CUDA device")
        except ImportError:
            have_torch = False
            print("PyTorch comparison skipped: torch is not installed here")
    rows = []
    for spec in args.runs.split(","):
        config, batch = spec.split(":")
        rows.append({"config": config, "batch": int(batch),
                     "flops_per_image": flops_per_image(CONFIGS[config])})
    # phases in order of value, the table after each: a time limit only loses the last ones
    for r in rows:
        for prec in ("bf16", "fp32"):
            r["ours_" + prec] = bench_ours(args.tool, r["config"], r["batch"], args.steps, prec)
            print(json.dumps({r["config"]: {prec: r["ours_" + prec]}}), flush=True)
    print_table(rows)
    phases = [] if not have_torch else [("eager", False)] + ([] if args.no_compile else
                                                            [("compile", True)])
    for name, comp in phases:
        for r in rows:
            if name == "eager":
                try:
                    r["torch_flops_per_image"] = torch_flops(r["config"])
                except Exception as e:  # noqa: BLE001 (a cross-check only)
                    r["torch_flops_per_image"] = f"error: {e}"
            try:
                r["torch_" + name] = bench_torch(r["config"], r["batch"], args.steps,
                                                 args.warmup, comp)
            except Exception as e:  # noqa: BLE001 (report and go on)
                r["torch_" + name] = {"error": str(e)[-400:]}
            print(json.dumps({r["config"]: {name: r["torch_" + name]}}), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
        print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

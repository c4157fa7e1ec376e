#!/usr/bin/env python3
"""PyTorch reference of the trainer's UNet, diffusion loss and AdamW (CPU, fp32).

The C code in trainer/ must compute what this file computes. Parameter names here are the
names in the C tensor table and in the safetensors checkpoints.

  unet_ref.py golden [--config test-16] [--out tests/golden/unet_test16.bin]
      writes the golden file that tests/unit/test_unet.c checks (weights, batch, expected
      output, loss, every gradient, losses and weights/EMA over 5 AdamW steps)
  unet_ref.py check-checkpoint DIR
      DIR was written by `pm_trainer_tool ckpt-forward DIR`: loads DIR/ckpt/latest's
      model.safetensors with the `safetensors` package into this model and checks that
      the forward output matches the C output saved in DIR/forward.bin
  unet_ref.py params --config tiny-32
      prints the parameter count

Needs torch (pip install torch); used only here and in bench/, never in CI.
"""
import argparse
import math
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

GOLDEN_MAGIC = 0x504D4755  # "UGMP" little-endian bytes "UGMP"... checked as an integer
GOLDEN_VERSION = 1

CONFIGS = {
    "tiny-32": dict(image_size=32, in_channels=3, channels=64, mult=[1, 2, 2], num_res_blocks=2,
                    attn_resolution=16, groups=32, cap_buckets=4096, cap_dim=128),
    "small-64": dict(image_size=64, in_channels=3, channels=64, mult=[1, 2, 2, 2],
                     num_res_blocks=2, attn_resolution=16, groups=32, cap_buckets=4096,
                     cap_dim=128),
    "test-16": dict(image_size=16, in_channels=3, channels=32, mult=[1, 2], num_res_blocks=2,
                    attn_resolution=8, groups=8, cap_buckets=256, cap_dim=32),
}
MAX_WORDS = 64
T_STEPS = 1000


def caption_tokens(caption, buckets):
    """Same as unet_caption_tokens() in trainer/unet.c."""
    if not caption:
        return []
    words, cur = [], bytearray()
    for c in caption.encode("utf-8"):
        if (48 <= c <= 57) or (97 <= c <= 122) or (65 <= c <= 90) or c >= 0x80:
            cur.append(c + 32 if 65 <= c <= 90 else c)
        elif cur:
            words.append(bytes(cur))
            cur = bytearray()
    if cur:
        words.append(bytes(cur))
    words = words[:MAX_WORDS]

    def fnv(b):
        h = 0xcbf29ce484222325
        for x in b:
            h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return h

    ids = [fnv(w) % buckets for w in words]
    ids += [fnv(words[i] + b" " + words[i + 1]) % buckets for i in range(len(words) - 1)]
    return ids


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half).float()
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tdim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb_act):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb_act)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Attn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        p = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(C), dim=-1)
        o = torch.einsum("bcj,bij->bci", v, p).reshape(B, C, H, W)
        return x + self.proj(o)


class Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()


class TEmb(nn.Module):
    def __init__(self, ch, tdim):
        super().__init__()
        self.lin1 = nn.Linear(ch, tdim)
        self.lin2 = nn.Linear(tdim, tdim)


class Cap(nn.Module):
    def __init__(self, buckets, dim, tdim):
        super().__init__()
        self.table = nn.Parameter(torch.randn(buckets, dim) * 0.02)
        self.null = nn.Parameter(torch.randn(dim) * 0.02)
        self.proj = nn.Linear(dim, tdim)


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch, g = cfg["channels"], cfg["groups"]
        tdim = 4 * ch
        self.temb = TEmb(ch, tdim)
        self.cap = Cap(cfg["cap_buckets"], cfg["cap_dim"], tdim)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
        res = cfg["image_size"]
        skips = [ch]
        cur = ch
        L = len(cfg["mult"])
        self.down = nn.ModuleList()
        for i, m in enumerate(cfg["mult"]):
            lvl = Level()
            for _ in range(cfg["num_res_blocks"]):
                lvl.res.append(ResBlock(cur, ch * m, tdim, g))
                cur = ch * m
                if res == cfg["attn_resolution"]:
                    lvl.attn.append(Attn(cur, g))
                skips.append(cur)
            if i != L - 1:
                lvl.down = nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                res //= 2
                skips.append(cur)
            self.down.append(lvl)
        self.mid = Level()
        self.mid.res.append(ResBlock(cur, cur, tdim, g))
        self.mid.attn.append(Attn(cur, g))
        self.mid.res.append(ResBlock(cur, cur, tdim, g))
        ups = [None] * L
        for i in reversed(range(L)):
            m = cfg["mult"][i]
            lvl = Level()
            for _ in range(cfg["num_res_blocks"] + 1):
                lvl.res.append(ResBlock(cur + skips.pop(), ch * m, tdim, g))
                cur = ch * m
                if res == cfg["attn_resolution"]:
                    lvl.attn.append(Attn(cur, g))
            if i != 0:
                lvl.up = nn.Conv2d(cur, cur, 3, padding=1)
                res *= 2
            ups[i] = lvl
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = nn.Conv2d(cur, cfg["in_channels"], 3, padding=1)

    def caption_vectors(self, tokens):
        rows = []
        for ids in tokens:
            if ids:
                rows.append(self.cap.table[torch.tensor(ids, dtype=torch.long)].mean(0))
            else:
                rows.append(self.cap.null)
        return torch.stack(rows)

    def forward(self, x, t, tokens):
        cfg = self.cfg
        temb = timestep_embedding(t, cfg["channels"])
        t2 = self.temb.lin2(F.silu(self.temb.lin1(temb)))
        emb = t2 + self.cap.proj(self.caption_vectors(tokens))
        ea = F.silu(emb)
        h = self.conv_in(x)
        hs = [h]
        for lvl in self.down:
            for j, rb in enumerate(lvl.res):
                h = rb(h, ea)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(h)
            if hasattr(lvl, "down"):
                h = lvl.down(h)
                hs.append(h)
        h = self.mid.res[0](h, ea)
        h = self.mid.attn[0](h)
        h = self.mid.res[1](h, ea)
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            for j, rb in enumerate(lvl.res):
                h = rb(torch.cat([h, hs.pop()], dim=1), ea)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "up"):
                h = lvl.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def alphas_cumprod():
    betas = torch.tensor([1e-4 + (0.02 - 1e-4) * i / (T_STEPS - 1) for i in range(T_STEPS)],
                         dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def q_sample(x0, noise, t):
    ab = alphas_cumprod()[t]
    ca = torch.sqrt(ab).float()[:, None, None, None]
    cb = torch.sqrt(1.0 - ab).float()[:, None, None, None]
    return ca * x0 + cb * noise


def make_optimizer(model, lr, betas, eps, wd):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps, foreach=False)


def flat(tensors):
    return np.concatenate([t.detach().reshape(-1).numpy().astype(np.float32) for t in tensors])


def cmd_golden(args):
    torch.manual_seed(args.seed)
    cfg = CONFIGS[args.config]
    model = UNet(cfg)
    # perturb what default init leaves constant, so every path carries signal
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("cap."):
                if name in ("cap.table", "cap.null"):
                    p.copy_(torch.randn_like(p) * 0.5)
            if p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1 and name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    init = flat(params)

    B, S, C = 4, cfg["image_size"], cfg["in_channels"]
    g = torch.Generator().manual_seed(args.seed + 1)
    images = torch.randint(0, 256, (B, S, S, C), generator=g, dtype=torch.uint8)
    captions = ["A red CAR, parked by the sea.", "", "photo of a dog; dog on grass (2024)",
                "résumé café — naïve test"]
    drop = [0, 0, 0, 1]
    ts = torch.tensor([0, 10, 500, 999], dtype=torch.long)
    noise = torch.randn(B, C, S, S, generator=g)
    x0 = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    tokens = [[] if drop[b] else caption_tokens(captions[b], cfg["cap_buckets"])
              for b in range(B)]
    lr, betas, eps, wd, ema_decay = 1e-3, (0.9, 0.999), 1e-8, 0.1, 0.9

    xt = q_sample(x0, noise, ts)
    out = model(xt, ts, tokens)
    loss = F.mse_loss(out, noise)
    loss.backward()
    grads = flat([p.grad for p in params])
    expected_out = out.detach().numpy().astype(np.float32).reshape(-1)
    loss0 = float(loss.detach())

    opt = make_optimizer(model, lr, betas, eps, wd)
    ema = [p.detach().clone() for p in params]
    losses = []
    for step in range(5):
        opt.zero_grad()
        out = model(xt, ts, tokens)
        l = F.mse_loss(out, noise)
        l.backward()
        losses.append(float(l.detach()))
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(ema_decay).add_(p, alpha=1.0 - ema_decay)
    after = flat(params)
    ema_after = flat(ema)

    with open(args.out, "wb") as f:
        hdr = np.zeros(64, dtype=np.int32)
        m = cfg["mult"] + [0] * (4 - len(cfg["mult"]))
        hdr[:20] = [GOLDEN_MAGIC, GOLDEN_VERSION, cfg["image_size"], cfg["in_channels"],
                    cfg["channels"], len(cfg["mult"]), m[0], m[1], m[2], m[3],
                    cfg["num_res_blocks"], cfg["attn_resolution"], cfg["groups"],
                    cfg["cap_buckets"], cfg["cap_dim"], B, len(names), init.size, 5, 0]
        f.write(hdr.tobytes())
        f.write(np.array([lr, betas[0], betas[1], eps, wd, ema_decay, loss0, 0],
                         dtype=np.float32).tobytes())
        f.write(args.config.encode().ljust(24, b"\0"))
        for n, p in zip(names, params):
            f.write(n.encode().ljust(64, b"\0"))
            f.write(struct.pack("<q", p.numel()))
        f.write(init.tobytes())
        f.write(images.numpy().tobytes())
        for c in captions:
            f.write(c.encode().ljust(128, b"\0"))
        f.write(np.array(ts.numpy(), dtype=np.int32).tobytes())
        f.write(np.array(drop, dtype=np.int32).tobytes())
        f.write(noise.numpy().astype(np.float32).tobytes())
        f.write(expected_out.tobytes())
        f.write(grads.tobytes())
        f.write(np.array(losses, dtype=np.float32).tobytes())
        f.write(after.tobytes())
        f.write(ema_after.tobytes())
    print(f"{args.config}: {init.size} params, loss {loss0:.6f}, losses {losses}, wrote {args.out}")


def read_forward_bin(path):
    """forward.bin from pm_trainer_tool: magic, B, C, S, then t[B], captions, x, out."""
    with open(path, "rb") as f:
        data = f.read()
    magic, ver, B, C, S = struct.unpack_from("<5i", data, 0)
    assert magic == 0x46444D50 and ver == 1, "not a forward.bin"
    off = 20
    cfg_name = data[off:off + 24].rstrip(b"\0").decode()
    off += 24
    t = np.frombuffer(data, dtype=np.int32, count=B, offset=off)
    off += 4 * B
    caps = []
    for _ in range(B):
        caps.append(data[off:off + 128].rstrip(b"\0").decode("utf-8"))
        off += 128
    n = B * C * S * S
    x = np.frombuffer(data, dtype=np.float32, count=n, offset=off).reshape(B, C, S, S)
    off += 4 * n
    out = np.frombuffer(data, dtype=np.float32, count=n, offset=off).reshape(B, C, S, S)
    return cfg_name, t, caps, x, out


def cmd_check_checkpoint(args):
    from safetensors.torch import load_file
    from safetensors import safe_open
    cfg_name, t, caps, x, out_c = read_forward_bin(f"{args.dir}/forward.bin")
    with open(f"{args.dir}/ckpt/latest") as f:
        step_dir = f.read().strip()
    path = f"{args.dir}/ckpt/{step_dir}/model.safetensors"
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["config"] == cfg_name, (meta, cfg_name)
    sd = load_file(path)
    model = UNet(CONFIGS[cfg_name])
    # the EMA copy must be there too, with the same names under "ema."
    ema = {k[4:]: v for k, v in sd.items() if k.startswith("ema.")}
    state = {k: v for k, v in sd.items() if not k.startswith("ema.")}
    assert set(ema) == set(state), "ema. tensors do not mirror the weights"
    model.load_state_dict(state, strict=True)
    tokens = [caption_tokens(c, CONFIGS[cfg_name]["cap_buckets"]) for c in caps]
    with torch.no_grad():
        out = model(torch.from_numpy(x.copy()), torch.from_numpy(t.astype(np.int64)), tokens)
    out = out.numpy()
    err = np.abs(out - out_c).max()
    scale = np.abs(out_c).max()
    print(f"{path}: step {meta['step']}, {len(sd)} tensors; forward max abs err {err:.3e} "
          f"(max |out| {scale:.3e}, rel {err / max(scale, 1e-30):.3e})")
    if err > 1e-4 * max(scale, 1.0):
        print("FAIL: PyTorch forward of the C checkpoint differs from the C forward")
        return 1
    print("OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden")
    g.add_argument("--config", default="test-16")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--out", default="tests/golden/unet_test16.bin")
    c = sub.add_parser("check-checkpoint")
    c.add_argument("dir")
    p = sub.add_parser("params")
    p.add_argument("--config", default="tiny-32")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.cmd == "golden":
        cmd_golden(args)
        return 0
    if args.cmd == "check-checkpoint":
        return cmd_check_checkpoint(args)
    if args.cmd == "params":
        m = UNet(CONFIGS[args.config])
        print(args.config, sum(p.numel() for p in m.parameters()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""AG-BCE speed: medseg's on-device loss vs the official MicroSegNet numpy/cv2 hard region.

Usage::

    .venv/bin/python benchmarks/agbce_speed.py               # 8×1×224×224, ks 4, 50 calls each
    .venv/bin/python benchmarks/agbce_speed.py --quick       # smoke test
    .venv/bin/python benchmarks/agbce_speed.py --device cpu  # default: cuda if available, else cpu

Needs ``opencv-python-headless`` (the ``bench`` extra) for the official path.

Inputs: a batch of 8 expert masks (discs of random centre and radius) and non-expert masks (the
same discs shifted and resized), so the hard region is a boundary band, as in micro-ultrasound;
random logits (N(0, 3²)) with ``requires_grad``.

Timed per call (forward + backward, the batch already on the device):

* medseg: ``medseg.losses.functional.ag_bce(logits, expert, non_expert, w_hard=4, ks=4)``:
  XOR + square dilation as max filters on the device, stable BCE from the logits.
* official: MicroSegNet ``utils.attention_BCE_loss`` (official repository, ``TransUNet/utils.py``):
  ``.cpu().numpy()`` of both masks, ``cv2.bitwise_xor`` (per sample: OpenCV 5 refuses the
  B×H×W batch the official code passes), a per-sample ``cv2.dilate`` loop, the
  maps back to the device with ``torch.tensor``, then the β-weighted BCE on ``sigmoid(logits)``.

A second pair of rows times the hard-region construction alone. Value agreement: |Δ loss| and
max |Δ gradient| between the two on the same inputs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_results import publish

from medseg.losses.functional import ag_bce, hard_region
from medseg.report.tables import markdown_table

try:
    import cv2
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit("opencv is needed for the official path: pip install 'medseg[bench]'") from exc


def official_hard_region(y_true: torch.Tensor, y_std: torch.Tensor, ks: int, device: torch.device):  # noqa: ANN201
    """The official hard/easy maps (B×H×W long masks in, float maps on ``device`` out)."""
    y_true_np, y_std_np = y_true.cpu().detach().numpy(), y_std.cpu().detach().numpy()
    # the official call is cv2.bitwise_xor on the whole B×H×W batch; OpenCV ≥ 5 refuses more than
    # 128 channels ("invalid count"), so the same XOR runs per sample (identical result)
    hard = np.stack([cv2.bitwise_xor(y_true_np[i], y_std_np[i]) for i in range(y_true_np.shape[0])])
    hard = hard.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (ks, ks))
    for i in range(hard.shape[0]):
        hard[i] = cv2.dilate(hard[i], kernel)
    hard = hard.astype(np.float32)
    easy = abs(hard - 1)
    return torch.tensor(hard).to(device), torch.tensor(easy).to(device)


def official_attention_bce(
    h_w: float, y_true: torch.Tensor, y_pred: torch.Tensor, y_std: torch.Tensor, ks: int
) -> torch.Tensor:
    """MicroSegNet's ``attention_BCE_loss`` with ``.cuda()`` replaced by the inputs' device."""
    number_of_pixels = y_true.shape[0] * y_true.shape[1] * y_true.shape[2]
    hard, easy = official_hard_region(y_true, y_std, ks, y_pred.device)
    epsilon = 0.000001
    beta = 0.5
    loss = -beta * torch.mul(y_true, torch.log(y_pred + epsilon)) - (1.0 - beta) * torch.mul(
        1.0 - y_true, torch.log(1.0 - y_pred + epsilon)
    )
    hard_loss = torch.sum(torch.mul(loss, hard))
    easy_loss = torch.sum(torch.mul(loss, easy))
    return ((1 / (1 + h_w)) * easy_loss + (h_w / (1 + h_w)) * hard_loss) / number_of_pixels


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0):  # noqa: ANN201
    """Logits (B×1×H×W, requires_grad), expert and non-expert disc masks (B×1×H×W float)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    experts, others = [], []
    for _ in range(batch):
        cy, cx = (torch.rand(2, generator=gen) * 0.4 + 0.3) * size
        r = (torch.rand(1, generator=gen) * 0.15 + 0.2) * size
        dy, dx, dr = (torch.rand(3, generator=gen) - 0.5) * 0.06 * size
        experts.append(((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).float())
        others.append(((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 < (r + dr) ** 2).float())
    expert = torch.stack(experts)[:, None].to(device)
    other = torch.stack(others)[:, None].to(device)
    logits = (torch.randn(batch, 1, size, size, generator=gen) * 3).to(device).requires_grad_()
    return logits, expert, other


def time_per_call(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds per call over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--ks", type=int, default=4)
    parser.add_argument("--w-hard", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="2×1×64×64, 5 calls")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.repeats = 2, 64, 5
    device = torch.device(args.device)
    logits, expert, other = make_batch(args.batch, args.size, device)
    # The official data loader yields B×H×W long masks; the network output is squeezed too.
    y_true, y_std = expert[:, 0].long(), other[:, 0].long()

    def ours() -> torch.Tensor:
        logits.grad = None
        loss = ag_bce(logits, expert, other, w_hard=args.w_hard, ks=args.ks)
        loss.backward()
        return loss

    def official() -> torch.Tensor:
        logits.grad = None
        loss = official_attention_bce(args.w_hard, y_true, torch.sigmoid(logits).squeeze(1), y_std, args.ks)
        loss.backward()
        return loss

    value_ours = ours().item()
    grad_ours = logits.grad.clone()
    value_official = official().item()
    grad_official = logits.grad.clone()
    hard_ours = hard_region(expert, other, args.ks)[:, 0]
    hard_official, _ = official_hard_region(y_true, y_std, args.ks, device)

    t_ours = time_per_call(ours, args.repeats, device)
    t_official = time_per_call(official, args.repeats, device)
    t_hard_ours = time_per_call(lambda: hard_region(expert, other, args.ks), args.repeats, device)
    t_hard_official = time_per_call(
        lambda: official_hard_region(y_true, y_std, args.ks, device), args.repeats, device
    )

    title = (
        f"AG-BCE, batch {args.batch}×1×{args.size}×{args.size}, ks {args.ks}, W {args.w_hard:g}, "
        f"device {device} (torch threads {torch.get_num_threads()}), median of {args.repeats} calls; "
        f"hard pixels {hard_ours.mean().item():.1%}"
    )
    rows = [
        {
            "what": "loss forward + backward",
            "medseg (ms)": t_ours * 1e3,
            "official (ms)": t_official * 1e3,
            "speed-up": f"{t_official / t_ours:.1f}×",
            "max abs diff": f"value {abs(value_ours - value_official):.2e}, "
            f"grad {(grad_ours - grad_official).abs().max().item():.2e}",
        },
        {
            "what": "hard region only",
            "medseg (ms)": t_hard_ours * 1e3,
            "official (ms)": t_hard_official * 1e3,
            "speed-up": f"{t_hard_official / t_hard_ours:.1f}×",
            "max abs diff": f"maps {(hard_ours - hard_official).abs().max().item():.0f}",
        },
    ]
    text = (
        f"{title}\n\n{markdown_table(rows, floatfmt='.3f')}\n\n"
        f"loss: medseg {value_ours:.8f}, official {value_official:.8f}"
    )
    print(text)
    publish("agbce_speed", text, args.quick)


if __name__ == "__main__":
    main()

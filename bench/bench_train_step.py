"""One module-training step in float32 and bfloat16, each with the standard and the
channels-last memory layout, side by side; and reading a batch in each.

    nice -n 10 python -m bench.bench_train_step [--threads 1] [--width 360] [--batch 32]
        [--rounds 5]

What ``capd module train`` does each step (capd.modules.train): the general network with
a tone curve and a 36-symbol output layer, forward on a random (batch, 1, 64, width)
batch, CTC loss, backward, AdamW. Securimage images read 1.5 times wider are about 360
columns. Reading: the same batch through the network in eval mode, as training reads its
unlabelled images (train.read_greys). The four ways alternate round by round, so a busy
machine slows them alike; it prints each round's seconds a step and the medians.
bfloat16 is fast only where the CPU multiplies bfloat16 matrices in hardware
(``train.cpu_has_bf16_matrix``, Intel AMX); elsewhere it is emulated, and training stays
float32 by default. Training runs channels-last in either precision.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

WAYS = (("float32", False, False), ("float32, channels-last", False, True),
        ("bfloat16", True, False), ("bfloat16, channels-last", True, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=360)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of 3 steps a way")
    args = ap.parse_args()

    import torch
    from torch import nn

    from capd.modules import train
    from capd.modules.net import set_channels_last

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789abcdefghijklmnopqrstuvwxyz"),
                             label)
    net.tone = train.Tone()
    nets = {False: net, True: copy.deepcopy(net)}
    set_channels_last(nets[True])
    opts = {cl: torch.optim.AdamW(n.parameters(), lr=1e-5) for cl, n in nets.items()}
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    x = torch.rand(args.batch, 1, 64, args.width)
    targets = torch.randint(1, 37, (args.batch * 6,))

    def step(bf16: bool, cl: bool) -> None:
        net = nets[cl]
        net.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        logp = out.float().log_softmax(2)
        loss = ctc(logp, targets, torch.full((args.batch,), logp.shape[0]),
                   torch.full((args.batch,), 6))
        opts[cl].zero_grad(set_to_none=True)
        loss.backward()
        opts[cl].step()

    def read(bf16: bool, cl: bool) -> None:
        net = nets[cl]
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x).float().softmax(-1)

    steps: dict[str, list[float]] = {name: [] for name, _, _ in WAYS}
    reads: dict[str, list[float]] = {name: [] for name, _, _ in WAYS}
    for _, bf16, cl in WAYS:  # warm-up: first calls pick kernels
        step(bf16, cl)
        read(bf16, cl)
    for r in range(args.rounds):
        for name, bf16, cl in WAYS:
            t = time.perf_counter()
            for _ in range(3):
                step(bf16, cl)
            steps[name].append((time.perf_counter() - t) / 3)
            t = time.perf_counter()
            for _ in range(3):
                read(bf16, cl)
            reads[name].append((time.perf_counter() - t) / 3)
        print(f"round {r + 1}: " + ", ".join(
            f"{name} {steps[name][-1]:.3f} s/step {reads[name][-1]:.3f} s/read"
            for name, _, _ in WAYS), flush=True)
    first = WAYS[0][0]
    s0, r0 = statistics.median(steps[first]), statistics.median(reads[first])
    print(f"threads {args.threads}, batch {args.batch} x 64 x {args.width}, median of"
          f" {args.rounds} rounds; bf16 matrix hardware: {train.cpu_has_bf16_matrix()}")
    for name, _, _ in WAYS:
        s, rd = statistics.median(steps[name]), statistics.median(reads[name])
        print(f"  {name:24s} step {s:.3f} s ({s0 / s:.2f}x)   read {rd:.3f} s"
              f" ({r0 / rd:.2f}x)")


if __name__ == "__main__":
    main()

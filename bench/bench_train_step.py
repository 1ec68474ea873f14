"""One module-training step in float32 against bfloat16, side by side.

    nice -n 10 python -m bench.bench_train_step [--threads 1] [--width 360] [--batch 32]
        [--rounds 5]

What ``capd module train`` does each step (capd.modules.train): the general network with
a tone curve and a 36-symbol output layer, forward on a random (batch, 1, 64, width)
batch, CTC loss, backward, AdamW. Securimage images read 1.5 times wider are about 360
columns. The two precisions alternate round by round, so a busy machine slows both
alike; it prints each round's seconds a step and the medians. bfloat16 is fast only
where the CPU multiplies bfloat16 matrices in hardware (``train.cpu_has_bf16_matrix``,
Intel AMX); elsewhere it is emulated, and training stays float32 by default.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=360)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of 3 steps a precision")
    args = ap.parse_args()

    import torch
    from torch import nn

    from capd.modules import train

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789abcdefghijklmnopqrstuvwxyz"),
                             label)
    net.tone = train.Tone()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    x = torch.rand(args.batch, 1, 64, args.width)
    targets = torch.randint(1, 37, (args.batch * 6,))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        logp = out.float().log_softmax(2)
        loss = ctc(logp, targets, torch.full((args.batch,), logp.shape[0]),
                   torch.full((args.batch,), 6))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):  # warm-up: first calls pick kernels
        step(bf16)
    for r in range(args.rounds):
        for bf16 in (False, True):
            t = time.perf_counter()
            for _ in range(3):
                step(bf16)
            times[bf16].append((time.perf_counter() - t) / 3)
        print(f"round {r + 1}: float32 {times[False][-1]:.3f} s/step,"
              f" bfloat16 {times[True][-1]:.3f} s/step", flush=True)
    f32, b16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"threads {args.threads}, batch {args.batch} x 64 x {args.width}: median float32"
          f" {f32:.3f} s/step, bfloat16 {b16:.3f} s/step ({f32 / b16:.2f}x);"
          f" bf16 matrix hardware: {train.cpu_has_bf16_matrix()}")


if __name__ == "__main__":
    main()

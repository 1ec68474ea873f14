"""A small CRNN: conv stack -> BiLSTM -> per-column class scores for CTC.

Input (N, 1, 32, W) grey, per-image standardised (capd_engine.preprocess); output
(T = W/4, N, C) logits, class 0 = CTC blank, class i = CHARSET[i-1]. About 0.42 M
parameters (~1.7 MB as float32 ONNX). Sized for CPU training: one core trains it at
~130 images/s.
"""

from __future__ import annotations

import torch
from torch import nn

# class 0 is the CTC blank; the rest is this string, in order (case kept). The
# multiplication sign drawn as a letter x is read as the letter 'x'.
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+-×="


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class CRNN(nn.Module):
    def __init__(self, n_classes: int = len(CHARSET) + 1, hidden: int = 96) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            *_block(1, 16), nn.MaxPool2d(2, 2),                      # 16 x W/2
            *_block(16, 32), nn.MaxPool2d(2, 2),                     # 8 x W/4
            *_block(32, 64), nn.MaxPool2d((2, 1), (2, 1)),           # 4 x W/4
            *_block(64, 96), *_block(96, 96), nn.MaxPool2d((2, 1), (2, 1)),  # 2 x W/4
            nn.Conv2d(96, 128, (2, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),                                   # 1 x W/4
        )
        self.rnn = nn.LSTM(128, hidden, bidirectional=True)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)                      # N, C, 1, T
        f = f.squeeze(2).permute(2, 0, 1)    # T, N, C
        f, _ = self.rnn(f)
        return self.fc(self.drop(f))         # T, N, classes

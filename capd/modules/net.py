"""ddddocr's default recogniser (``common_old.onnx``, what ``DdddOcr()`` loads) rebuilt
in PyTorch, with its weights read out of the ONNX file. Needs the ``modules`` extra
(torch, onnx): only training imports it; the service runs the exported ONNX files.

The same loader reads files of this network that ONNX Runtime's dynamic quantisation
wrote (the shipped ``finetuned`` engine, int8 custom modules), so they can be the base
of further training.

The shipped file is dynamically quantised (ConvInteger / DynamicQuantizeLSTM /
MatMulInteger with uint8 or int8 weights, one scale and zero point per tensor or per
LSTM direction); the loader dequantises every weight as ``scale * (q - zero_point)``.
Biases are stored in float32 and used as they are. onnx2torch cannot convert the graph
(it stops at DynamicQuantizeLSTM), hence this hand-written copy.

The network, as read from the graph (BatchNorm already folded into the convolutions):

    input (N, 1, 64, W) grey in [0, 1]
    (tone  a module's learnt grey-level curve, Tone, when it has one)
    stem   conv3x3 1->24 stride 2, SiLU                                 32 x W/2
    2 x    residual [conv3x3 24->24, SiLU, conv1x1 24->24]
    down   conv3x3 24->96 stride 2, SiLU, conv1x1 96->48                16 x W/4
    3 x    residual [conv3x3 48->192, SiLU, conv1x1 192->48]
    down   conv3x3 48->192 stride 2, SiLU, conv1x1 192->64               8 x W/8
    3 x    residual [conv3x3 64->256, SiLU, conv1x1 256->64]
    columns (W/8, N, 64 * 8): channel-major, then row
    BiLSTM(512, hidden 512) -> Linear(1024 -> classes)
    output (T = W/8, N, classes) logits, class 0 = CTC blank

    python -m training.ddddocr_net --check 100    # agreement with ONNX Runtime
"""

from __future__ import annotations

from importlib import resources
from typing import IO, Any

import numpy as np
import torch
from torch import nn

HEIGHT = 64
STRIDE = 8  # input columns per output frame
FRONT_BLOCKS = 6  # body blocks up to the 48-channel stage's output (the "front")
TONE_KNOTS = "tone.knots"  # the ONNX initializer of a learnt grey curve (Tone)


class Residual(nn.Module):
    """x + conv1x1(SiLU(conv3x3(x))), the inverted-bottleneck block of the graph."""

    def __init__(self, ch: int, mid: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(ch, mid, 3, padding=1)
        self.project = nn.Conv2d(mid, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(nn.functional.silu(self.expand(x)))


class Down(nn.Module):
    """conv3x3 stride 2 + SiLU, then a linear 1x1 projection."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(cin, mid, 3, stride=2, padding=1)
        self.project = nn.Conv2d(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(nn.functional.silu(self.expand(x)))


class Tone(nn.Module):
    """A learnt grey-level curve applied to every pixel before the first convolution:
    piecewise linear over ``steps`` equal steps of [0, 1], starting as the identity. A
    convolution cannot lighten one grey level while keeping a darker and a lighter one
    (Securimage draws its text at one grey and the lines across it at a darker one); a
    curve can."""

    def __init__(self, steps: int = 64) -> None:
        super().__init__()
        self.steps = steps
        self.knots = nn.Parameter(torch.linspace(0.0, 1.0, steps + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.clamp(0.0, 1.0) * self.steps
        i = t.floor().clamp(max=self.steps - 1)
        f = t - i
        k = i.long()
        return self.knots[k] * (1 - f) + self.knots[k + 1] * f


class DdddNet(nn.Module):
    """The CNN + BiLSTM + linear CTC head of ddddocr's default model."""

    def __init__(self, n_classes: int = 8210) -> None:
        super().__init__()
        self.tone: Tone | None = None  # a module's learnt grey curve (train --tone)
        self.stem = nn.Conv2d(1, 24, 3, stride=2, padding=1)
        self.body = nn.Sequential(
            Residual(24, 24), Residual(24, 24),
            Down(24, 96, 48), Residual(48, 192), Residual(48, 192), Residual(48, 192),
            Down(48, 192, 64), Residual(64, 256), Residual(64, 256), Residual(64, 256),
        )
        self.lstm = nn.LSTM(512, 512, bidirectional=True)
        self.head = nn.Linear(1024, n_classes)

    def convs(self) -> list[nn.Conv2d]:
        """Every convolution in graph order (the order of the ONNX ConvInteger nodes)."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, W) -> (N, 48, 16, W/4): the stem and the first two stages."""
        return self.body[:FRONT_BLOCKS](nn.functional.silu(self.stem(x)))

    def back(self, f: torch.Tensor) -> torch.Tensor:
        """front()'s output -> (W/8, N, classes) logits."""
        x = self.body[FRONT_BLOCKS:](f)  # (N, 64, 8, W/8)
        n, c, h, w = x.shape
        cols = x.permute(3, 0, 1, 2).reshape(w, n, c * h)
        return self.head(self.lstm(cols)[0])

    def forward(self, x: torch.Tensor, tone: bool = True) -> torch.Tensor:
        """(N, 1, 64, W) grey in [0, 1] -> (W/8, N, classes) logits; ``tone=False``: the
        input has been through the tone curve already (training augments after it)."""
        if tone and self.tone is not None:
            x = self.tone(x)
        return self.back(self.front(x))


class Ensemble(nn.Module):
    """Several DdddNets over the same charset in one graph: each member's (T, N,
    classes) logits, one output each, in order (a module's ``members``; the engine
    combines their readings, post.decode_by_members). Their frames are not averaged:
    networks trained apart place a character's peak on different frames."""

    def __init__(self, members: list[DdddNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m in self.members)


def set_channels_last(net: nn.Module, on: bool = True) -> None:
    """Put the network's convolution weights in the channels-last memory layout (or, with
    ``on=False``, back in the standard one): oneDNN, PyTorch's CPU library, convolves
    fastest in it and otherwise reorders tensors around every convolution. The values
    are unchanged; an ONNX export is the same either way."""
    layout = torch.channels_last if on else torch.contiguous_format
    for p in net.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=layout)


def default_onnx_path() -> str:
    """The file DdddOcr() loads by default (ddddocr 1.6: common_old.onnx)."""
    return str(resources.files("ddddocr").joinpath("common_old.onnx"))


def _ifco_to_ifgo(w: np.ndarray, hidden: int) -> np.ndarray:
    """Reorder ONNX LSTM gate blocks (i, o, f, c) along axis 0 to PyTorch's (i, f, g, o)."""
    i, o, f, c = (w[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o], axis=0)


def load_onnx_weights(net: DdddNet, path: str | IO[bytes] | None = None) -> None:
    """Fill ``net`` with the weights of an ONNX file of this network: int8 (dequantised;
    ddddocr's own file by default) or float32 (what a module's export keeps when int8
    reads worse). A file of several such networks (an Ensemble: a module trained with
    members) gives its first one's. Raises ValueError when the file's shapes differ."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path or default_onnx_path())
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def deq(q: str, scale: str, zero: str) -> np.ndarray:
        s = init[scale].astype(np.float64)
        z = init[zero].astype(np.float64)
        arr = init[q].astype(np.float64)
        if s.ndim == 1:  # per LSTM direction
            s = s.reshape(-1, *([1] * (arr.ndim - 1)))
            z = z.reshape(-1, *([1] * (arr.ndim - 1)))
        return (s * (arr - z)).astype(np.float32)

    nodes = list(model.graph.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    produced_by: dict[str, onnx.NodeProto] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            produced_by[name] = node

    def bias_after(out: str) -> np.ndarray:
        # an integer conv / matmul output goes through Cast and Mul (the rescale) in
        # files quantised by ONNX Runtime, straight into an Add in ddddocr's own file;
        # the Add's other input is the float bias, or a Reshape of it (ddddocr's file
        # names the reshaped input "<bias>_quantized")
        node = next(n for n in consumers[out] if n.op_type in ("Add", "Cast", "Mul"))
        while node.op_type != "Add":
            out = node.output[0]
            node = next(n for n in consumers[out] if n.op_type in ("Add", "Cast", "Mul"))
        other = node.input[1] if node.input[0] == out else node.input[0]
        if other not in init:
            other = produced_by[other].input[0].removesuffix("_quantized")
        return init[other].astype(np.float32)

    # an Ensemble (a module's members) gives its first network, and that one's curve
    # ("members.0.tone.knots")
    nodes = _first_member(model, produced_by)
    curves = [name for n in nodes for name in n.input
              if name.endswith(TONE_KNOTS) and name in init]
    knots = init[curves[0]] if curves else None
    if knots is not None:  # a module with a learnt grey curve (Tone)
        if knots.ndim != 1 or len(knots) < 2:
            raise ValueError(f"{TONE_KNOTS}: shape {knots.shape}")
        net.tone = Tone(len(knots) - 1)
        with torch.no_grad():
            net.tone.knots.copy_(torch.from_numpy(knots.astype(np.float32)))
    if not any(n.op_type == "ConvInteger" for n in nodes):
        _load_float(net, nodes, init)
        return
    convs = [n for n in nodes if n.op_type == "ConvInteger"]
    modules = net.convs()
    if len(convs) != len(modules):
        raise ValueError(f"graph has {len(convs)} convolutions, the network {len(modules)}")
    with torch.no_grad():
        for node, conv in zip(convs, modules, strict=True):
            wq, wz = node.input[1], node.input[3]
            w = deq(wq, wq.replace("_quantized", "_scale"), wz)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{wq}: {w.shape} vs {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(bias_after(node.output[0])))

        lstm_node = next(n for n in nodes if n.op_type == "DynamicQuantizeLSTM")
        names = list(lstm_node.input)
        hidden = net.lstm.hidden_size
        # DynamicQuantizeLSTM stores W and R transposed: (dirs, input, 4 * hidden)
        w_all = deq(names[1], names[8], names[9])
        r_all = deq(names[2], names[10], names[11])
        b_all = init[names[3]].astype(np.float32)  # (dirs, 8 * hidden): Wb then Rb
        for d, suffix in enumerate(("", "_reverse")):
            w_ih = _ifco_to_ifgo(w_all[d].T, hidden)
            w_hh = _ifco_to_ifgo(r_all[d].T, hidden)
            b_ih = _ifco_to_ifgo(b_all[d, :4 * hidden], hidden)
            b_hh = _ifco_to_ifgo(b_all[d, 4 * hidden:], hidden)
            getattr(net.lstm, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(w_ih))
            getattr(net.lstm, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(w_hh))
            getattr(net.lstm, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(b_ih))
            getattr(net.lstm, f"bias_hh_l0{suffix}").copy_(torch.from_numpy(b_hh))

        mm = next(n for n in nodes if n.op_type == "MatMulInteger")
        w_fc = deq(mm.input[1], mm.input[1].replace("_quantized", "_scale"), mm.input[3])
        if tuple(w_fc.T.shape) != tuple(net.head.weight.shape):
            raise ValueError(f"output layer {w_fc.T.shape} vs {tuple(net.head.weight.shape)}")
        net.head.weight.copy_(torch.from_numpy(w_fc.T.copy()))
        net.head.bias.copy_(torch.from_numpy(bias_after(mm.output[0])))


def _first_member(model: Any, produced_by: dict[str, Any]) -> list[Any]:
    """The nodes the graph's first output is computed from: every node of a single
    network's graph, the first network's of an Ensemble's (whose members have one output
    each; node order alone does not tell, the quantiser interleaves them)."""
    keep: set[int] = set()
    todo = [model.graph.output[0].name]
    while todo:
        node = produced_by.get(todo.pop())
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            todo.extend(node.input)
    return [n for n in model.graph.node if id(n) in keep]


def _load_float(net: DdddNet, nodes: list[Any], init: dict[str, np.ndarray]) -> None:
    """The float32 export's layout: Conv (weight, bias), LSTM (W, R, B in ONNX's own
    (dirs, 4 * hidden, input) layout, gates i-o-f-c) and the head as MatMul + Add."""

    def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        arr = np.array(init[name], dtype=np.float32)  # a writable copy
        if tuple(arr.shape) != shape:
            raise ValueError(f"{name}: {arr.shape} vs {shape}")
        return torch.from_numpy(arr)

    convs = [n for n in nodes if n.op_type == "Conv"]
    modules = net.convs()
    if len(convs) != len(modules):
        raise ValueError(f"graph has {len(convs)} convolutions, the network {len(modules)}")
    with torch.no_grad():
        for node, conv in zip(convs, modules, strict=True):
            assert conv.bias is not None
            conv.weight.copy_(take(node.input[1], tuple(conv.weight.shape)))
            conv.bias.copy_(take(node.input[2], tuple(conv.bias.shape)))
        lstm_node = next(n for n in nodes if n.op_type == "LSTM")
        hidden = net.lstm.hidden_size
        w_all, r_all, b_all = (init[name].astype(np.float32) for name in lstm_node.input[1:4])
        for d, suffix in enumerate(("", "_reverse")):
            for attr, arr in ((f"weight_ih_l0{suffix}", w_all[d]),
                              (f"weight_hh_l0{suffix}", r_all[d]),
                              (f"bias_ih_l0{suffix}", b_all[d, :4 * hidden]),
                              (f"bias_hh_l0{suffix}", b_all[d, 4 * hidden:])):
                param = getattr(net.lstm, attr)
                value = np.array(_ifco_to_ifgo(arr, hidden))
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"LSTM {attr}: {value.shape} vs {tuple(param.shape)}")
                param.copy_(torch.from_numpy(value))
        mm = next(n for n in nodes if n.op_type == "MatMul" and n.input[1] in init)
        w_fc = init[mm.input[1]].astype(np.float32)
        if tuple(w_fc.T.shape) != tuple(net.head.weight.shape):
            raise ValueError(f"output layer {w_fc.T.shape} vs {tuple(net.head.weight.shape)}")
        net.head.weight.copy_(torch.from_numpy(np.array(w_fc.T)))
        add = next(n for n in nodes if n.op_type == "Add" and mm.output[0] in n.input)
        bias = next(x for x in add.input if x in init)
        net.head.bias.copy_(take(bias, tuple(net.head.bias.shape)))


def pretrained(path: str | None = None) -> DdddNet:
    """ddddocr's network with its original 8210-class head, weights dequantised."""
    net = DdddNet()
    load_onnx_weights(net, path)
    return net.eval()

"""Fixed-shape tiles over an image, and how far a network looks (its receptive field).

Every tile of an image has the same window shape, so one statically shaped compiled model serves them all.
Border windows are shifted inward instead of padded: a window edge is then either the image edge (where the
network pads exactly as it does on the whole image) or at least ``overlap`` pixels away from the kept core.
With ``overlap >= receptive_radius`` the stitched result is the untiled result, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """Window (y, x, h, w) read from the LR image and the core [y0, y1) x [x0, x1) it writes, in LR pixels."""

    y: int
    x: int
    h: int
    w: int
    y0: int
    y1: int
    x0: int
    x1: int


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _axis(length: int, tile: int, overlap: int, align: int) -> list[tuple[int, int, int, int]]:
    """(window start, window size, core start, core end) along one axis; equal cores, equal windows."""
    if tile <= 0 or tile >= length:
        return [(0, length, 0, length)]
    n = math.ceil(length / tile)
    core = _round_up(math.ceil(length / n), align)
    window = min(core + 2 * overlap, length)
    out = []
    for start in range(0, length, core):
        end = min(start + core, length)
        w0 = min(max(start - overlap, 0), length - window)
        out.append((w0, window, start, end))
    return out


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering an image; ``tile`` is the largest core side (0 = one window, the whole image).

    ``align`` (the network's input down-sampling, e.g. 2 for a pixel-unshuffle x2 model) keeps every window on the
    whole image's grid; height and width must be multiples of it.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    overlap = _round_up(overlap, align)
    rows = _axis(height, tile, overlap, align)
    cols = _axis(width, tile, overlap, align)
    return [Tile(wy, wx, wh, ww, y0, y1, x0, x1) for wy, wh, y0, y1 in rows for wx, ww, x0, x1 in cols]


def window_pixels(tiles: list[Tile]) -> int:
    """LR pixels the network computes for these tiles (overlap included): the cost of a tiling."""
    return sum(t.h * t.w for t in tiles)


# ops whose output pixel reads a neighbourhood of its input: half-width in input pixels
_INTERP_HALF = {"nearest": 1.0, "linear": 1.0, "linear_onnx": 1.0, "bilinear_pillow": 1.0, "cubic": 2.0,
                "bicubic_pillow": 2.0}


@dataclass(frozen=True)
class Reach:
    """What tiling must respect: ``radius`` (LR pixels an output pixel can see, rounded up), ``align`` (the input
    down-sampling, e.g. 2 for a pixel-unshuffle x2 model: windows keep to its grid) and ``scale``."""

    radius: int
    align: int
    scale: int


def network_reach(model) -> Reach:
    """Receptive radius, alignment and scale of a statically shaped ov.Model (1, C, H, W).

    Walks the graph: a k x k convolution (dilation d) on a feature map s times the input size adds
    (k - 1) / 2 * d / s LR pixels; interpolation and pooling add their kernel half-width; anything else keeps the
    widest of its inputs. An upper bound.
    """
    param = model.get_parameters()[0]
    h0 = int(param.get_output_shape(0)[2])
    radius: dict[str, float] = {param.get_name(): 0.0}
    smallest = h0

    def spatial_scale(shape) -> float:
        return int(shape[2]) / h0 if len(shape) == 4 and int(shape[2]) else 1.0

    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Parameter":
            continue
        ins = [(i, radius[op.input_value(i).get_node().get_name()]) for i in range(op.get_input_size())
               if op.input_value(i).get_node().get_name() in radius]
        if not ins:
            continue  # constants and what is computed from them alone
        r = max(v for _, v in ins)
        r0 = dict(ins).get(0)
        if r0 is not None and kind in ("Convolution", "GroupConvolution", "BinaryConvolution", "Interpolate",
                                       "AvgPool", "MaxPool"):
            s_in = spatial_scale(op.get_input_shape(0))
            attrs = op.get_attributes()
            if kind == "Interpolate":
                half = _INTERP_HALF.get(str(attrs.get("mode", "cubic")).lower(), 2.0)
            elif kind in ("AvgPool", "MaxPool"):
                half = max((int(k) - 1) / 2 for k in attrs.get("kernel", [1]))
            else:
                kernel = list(op.get_input_shape(1))[-2:]
                half = max((int(k) - 1) / 2 * int(d) for k, d in zip(kernel, attrs.get("dilations", [1, 1])))
            r = r0 + half / s_in
        radius[op.get_name()] = r
        shape = op.get_output_partial_shape(0)
        if shape.rank.is_static and shape.rank.get_length() == 4 and shape[2].is_static:
            hh = shape[2].get_length()
            if 0 < hh < smallest and h0 % hh == 0:
                smallest = hh
    results = model.get_results()
    r_out = max((radius.get(res.get_name(), 0.0) for res in results), default=0.0)
    out_h = int(results[0].get_output_shape(0)[2]) if results else h0
    return Reach(int(math.ceil(r_out - 1e-9)), max(1, h0 // smallest), max(1, round(out_h / h0)))

"""Dynamic (per-pixel) depthwise convolution: DLGSANet's multi-head dynamic local self-attention (MHDLSA).

For every output pixel a hypernetwork predicts one ``k x k`` kernel per *kernel group*; the kernel is shared by
the ``C / G`` channels of its group and applied to the centred, zero-padded ``k x k`` neighbourhood of the input:

    out[b, c, h, w] = sum_{i, j} weight[b, g(c), i, j, h, w] * x[b, c, h + i - k // 2, w + j - k // 2]

with ``g(c) = c // (C / G)`` and zero outside the image. There is no normalisation of the weights and no bias (it
is an "attention-weights x values" step whose weights come from a hypernetwork instead of a softmax). This is the
computation of the CuPy kernel ``_idynamic_cuda`` of the official DLGSANet code (stride 1, padding ``k // 2``),
written in pure PyTorch, so it runs on CPU and CUDA, in any floating dtype, under autograd and AMP.

Note the border semantics differ from neighborhood attention (``attnzoo.ops.na2d``), which shifts windows to stay
inside the map: here windows are centred and out-of-image taps are zeros.

Layouts: ``x`` is ``[B, C, H, W]``; ``weight`` is ``[B, G, k, k, H, W]`` (or ``[B, G * k * k, H, W]``, the raw
hypernetwork output, row-major over ``(G, kh, kw)``). Output ``[B, C, H, W]``.

Backends (``attnzoo.ops.use_backend``): ``reference`` builds all ``k * k`` shifted copies with ``F.unfold`` (memory
``k^2`` times the input; the readable definition); ``torch`` runs the shift-and-accumulate loop over the ``k^2``
taps, whose memory is ``O(B * C * H * W)``; ``auto`` takes the unfold path while its copy is small (faster) and the
loop above that. ``flex``, ``natten`` and ``triton`` have no kernel for this op: requesting one raises a ValueError.
"""
import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_same_dtype, check_simple_backend, check_tensor
from ._dispatch import add_attention_macs, counting_macs, exporting

__all__ = ['dynamic_dwconv2d', 'dynamic_dwconv2d_macs']

# ``auto`` uses the unfold path (faster: one product and one reduction) while its k^2-times copy stays below this
# many elements (64 MiB in float32), the shift-and-accumulate loop above it.
_AUTO_UNFOLD_MAX = 1 << 24


def _check(x: torch.Tensor, weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    op = 'dynamic_dwconv2d'
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'{op}: kernel_size must be an odd positive int, got {kernel_size!r}')
    check_tensor(op, 'x', x, ('B', 'C', 'H', 'W'))
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f'{op}: weight must be a torch.Tensor, got {type(weight).__name__}')
    check_same_dtype(op, x=x, weight=weight)
    check_same_device(op, x=x, weight=weight)
    b, c, h, w = x.shape
    k2 = kernel_size * kernel_size
    if weight.dim() == 4:
        if weight.shape[0] != b or weight.shape[2:] != (h, w) or weight.shape[1] % k2:
            raise ValueError(f'dynamic_dwconv2d: weight [B, G*k*k, H, W] must be [{b}, G*{k2}, {h}, {w}], '
                             f'got {tuple(weight.shape)}')
        weight = weight.view(b, weight.shape[1] // k2, kernel_size, kernel_size, h, w)
    if weight.dim() != 6 or weight.shape[0] != b or weight.shape[2:4] != (kernel_size, kernel_size) \
            or weight.shape[4:] != (h, w):
        raise ValueError(f'dynamic_dwconv2d: weight must be [B, G, k, k, H, W] = [{b}, G, {kernel_size}, '
                         f'{kernel_size}, {h}, {w}], got {tuple(weight.shape)}')
    groups = weight.shape[1]
    if groups < 1 or c % groups:
        raise ValueError(f'dynamic_dwconv2d: the number of kernel groups G={groups} must divide the channels C={c}')
    return weight


def _reference(x: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    b, c, h, w = x.shape
    g = weight.shape[1]
    cols = F.unfold(x, k, padding=k // 2).view(b, g, c // g, k * k, h, w)
    return (cols * weight.reshape(b, g, 1, k * k, h, w)).sum(dim=3).view(b, c, h, w)


def _shift_sum(x: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    b, c, h, w = x.shape
    g = weight.shape[1]
    r = k // 2
    xp = F.pad(x, (r, r, r, r)).view(b, g, c // g, h + 2 * r, w + 2 * r)
    wk = weight.unsqueeze(2)  # [B, G, 1, k, k, H, W]
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[..., i:i + h, j:j + w] * wk[:, :, :, i, j]
            out = term if out is None else out + term
    return out.reshape(b, c, h, w)


def dynamic_dwconv2d_macs(x_shape, kernel_size: int) -> int:
    """Nominal MACs of one call: ``B * C * H * W * k^2`` (one multiply-add per tap and channel)."""
    b, c, h, w = x_shape
    return int(b * c * h * w * kernel_size * kernel_size)


def dynamic_dwconv2d(x: torch.Tensor, weight: torch.Tensor, kernel_size: int = 7) -> torch.Tensor:
    """Per-pixel dynamic depthwise convolution (centred ``k x k`` window, zero padding, stride 1).

    Args:
        x: ``[B, C, H, W]`` input (DLGSANet: the ``conv0`` output ``U``).
        weight: ``[B, G, k, k, H, W]`` per-pixel kernels, one per group of ``C / G`` channels, or the flat
            ``[B, G * k * k, H, W]`` hypernetwork output.
        kernel_size: ``k`` (odd).

    Returns:
        ``[B, C, H, W]``.
    """
    weight = _check(x, weight, kernel_size)
    backend = check_simple_backend('dynamic_dwconv2d', "there is no fused kernel for it ('torch' is the "
                                   "shift-and-accumulate loop)")
    if counting_macs():  # the count is a plain int: computed only when asked, so export keeps B, H, W symbolic
        add_attention_macs(dynamic_dwconv2d_macs(x.shape, kernel_size))
    # under export the choice may not depend on the (symbolic) size: the loop, whose memory is O(k^2) smaller
    if backend == 'reference' or (backend == 'auto' and not exporting()
                                  and x.numel() * kernel_size ** 2 <= _AUTO_UNFOLD_MAX):
        return _reference(x, weight, kernel_size)
    return _shift_sum(x, weight, kernel_size)

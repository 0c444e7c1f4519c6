"""Publish a training checkpoint as plain network weights that timm loads strictly.

    attnzoo-publish work_dirs/demo_digits/epoch_10.pth --out release/dinat_digits
    # -> release/dinat_digits-<sha256[:8]>.safetensors and release/dinat_digits-<sha256[:8]>.pth

A checkpoint of ``attnzoo-train`` (``tools/train.py``) holds the task model's state dict (the timm network under
``model.``), the optimizer, the message hub and, with an ``EMAHook``, the EMA copy. When the run kept EMA,
mmengine's ``EMAHook.before_save_checkpoint`` has already swapped the EMA weights into ``state_dict`` (the raw ones
went to ``ema_state_dict``), so ``state_dict`` holds the weights to publish either way, as mmpretrain's
``publish_model.py`` relies on. The tool keeps the entries under ``--prefix`` with the prefix removed, drops the
rest (the optimizer, a distillation teacher: named in the output), and writes them as safetensors and as a plain
``torch.save`` dict, each named with the first 8 hex digits of its own sha256 (timm's ``clean_checkpoint.py``
convention; the full digests are printed). Load one with::

    timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH, num_classes=N), **kwargs)

(``num_classes`` in the overlay too, so timm loads the classifier strictly instead of dropping it). The input is
read tensors-only (plus the types of mmengine checkpoints); ``--trust-checkpoint`` unpickles it fully, which can
run code: only for files you trust.
"""
import argparse
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import torch

__all__ = ['network_state_dict', 'publish', 'main']


def network_state_dict(checkpoint: Dict, prefix: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The entries of ``checkpoint['state_dict']`` under ``prefix``, without it, and the dropped keys.

    Raises:
        ValueError: ``checkpoint`` has no ``state_dict`` (not a training checkpoint) or nothing under ``prefix``.
    """
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError("checkpoint has no 'state_dict': not a training checkpoint of attnzoo-train "
                         '(a bare state dict needs no publishing; attnzoo-convert converts official files)')
    kept = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not kept:
        tops = sorted({key.split('.', 1)[0] + '.' for key in state})
        raise ValueError(f'--prefix {prefix!r} matches no key of the state dict; its keys start with {tops}')
    return kept, [key for key in state if not key.startswith(prefix)]


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            sha.update(block)
    return sha.hexdigest()


def _save_named(state: Dict[str, torch.Tensor], out: Path, suffix: str) -> Tuple[Path, str]:
    """Write ``state`` as ``<out>.part<suffix>``, then rename it ``<out>-<sha256[:8]><suffix>``."""
    from safetensors.torch import save_file
    part = out.with_name(f'{out.name}.part{suffix}')
    if suffix == '.safetensors':
        save_file(state, str(part))
    else:
        torch.save(state, part)
    digest = _digest(part)
    final = out.with_name(f'{out.name}-{digest[:8]}{suffix}')
    os.replace(part, final)
    return final, digest


def publish(state: Dict[str, torch.Tensor], out: Path) -> List[Tuple[Path, str]]:
    """Write ``state`` (the network's state dict) next to ``out`` (a path stem) as safetensors and ``.pth``;
    returns ``(path, sha256)`` for each. Tensors are made contiguous and unshared (safetensors refuses shared
    storage)."""
    state = {key: value.detach().clone().contiguous() for key, value in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    return [_save_named(state, out, suffix) for suffix in ('.safetensors', '.pth')]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', type=Path, help='checkpoint written by attnzoo-train / tools/train.py')
    p.add_argument('--out', required=True, type=Path,
                   help='path stem of the outputs: <out>-<sha256[:8]>.safetensors and .pth')
    p.add_argument('--prefix', default='model.',
                   help="the network's prefix in the task model's state dict (default: model.)")
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='fully unpickle CHECKPOINT (it can run code): only for files you trust')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from attnzoo.utils.checkpoint import load_checkpoint
    if not args.checkpoint.is_file():
        raise SystemExit(f'checkpoint: no such file {args.checkpoint}')
    checkpoint = load_checkpoint(args.checkpoint, trusted=args.trust_checkpoint)
    try:
        state, dropped = network_state_dict(checkpoint, args.prefix)
    except ValueError as err:
        raise SystemExit(f'{args.checkpoint}: {err}')
    written = publish(state, args.out)
    source = 'EMA weights (swapped in by EMAHook)' if 'ema_state_dict' in checkpoint else 'weights (no EMA kept)'
    print(f'{args.checkpoint}: {source} under {args.prefix!r}')
    if dropped:
        groups = Counter(key.split('.', 1)[0] for key in dropped)
        print('dropped: ' + ', '.join(f'{name}.* ({n})' for name, n in sorted(groups.items())))
    for path, digest in written:
        print(f'{path}  sha256={digest}')


if __name__ == '__main__':
    main()

"""Convert an official checkpoint into attnzoo's key layout.

    python tools/convert_weights.py --model dinat_tiny --src dinat_tiny_in1k_224.pth --out dinat_tiny.pth

The model family's own ``checkpoint_filter_fn`` does the mapping (the same function that
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` uses), then
the result is loaded strictly into the model, so a key that does not map stops the conversion
with the list of offending keys. The classifier size is taken from the checkpoint. Use
``--model-kwargs`` for checkpoints of non-registered widths/depths (e.g. ``embed_dim=16
depths=[2,2,2,2]``). ``--out`` ending in ``.safetensors`` writes safetensors.
"""
import argparse
import ast
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_kwargs(items: List[str]) -> Dict[str, Any]:
    """``['a=1', 'b=[1,2]', 'c=foo']`` -> ``{'a': 1, 'b': [1, 2], 'c': 'foo'}``."""
    out = {}
    for item in items:
        if '=' not in item:
            raise SystemExit(f'--model-kwargs: expected key=value, got {item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a checkpoint file (.pth/.pt/.bin via torch, .safetensors via safetensors)."""
    if not path.is_file():
        raise SystemExit(f'--src: no such file {path}')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location='cpu', weights_only=True)


def convert(model_name: str, checkpoint: Dict[str, Any], model_kwargs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Map ``checkpoint`` onto ``model_name`` and check it loads strictly. Returns our state dict."""
    import timm
    import attnzoo  # noqa: F401  (registers the models)
    if not timm.is_model(model_name):
        close = timm.list_models(f'*{model_name.split("_")[0]}*')
        raise SystemExit(f'--model: unknown model {model_name!r}; attnzoo/timm models like it: {close[:12]}')
    model = timm.create_model(model_name, pretrained=False, **model_kwargs)
    filter_fn = getattr(sys.modules[type(model).__module__], 'checkpoint_filter_fn', None)
    if filter_fn is None:
        raise SystemExit(f'{model_name}: its module has no checkpoint_filter_fn to convert official weights')
    state_dict = filter_fn(checkpoint, model)
    classifier = model.pretrained_cfg.get('classifier')
    head_key = f'{classifier}.weight' if classifier else None
    if head_key and head_key in state_dict and state_dict[head_key].shape[0] != model.num_classes:
        model = timm.create_model(model_name, pretrained=False, num_classes=state_dict[head_key].shape[0],
                                  **model_kwargs)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise SystemExit(f'{model_name}: the converted checkpoint does not match the model.\n'
                         f'  missing keys ({len(missing)}): {missing[:20]}\n'
                         f'  unexpected keys ({len(unexpected)}): {unexpected[:20]}')
    return model.state_dict()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help='attnzoo model name, e.g. dinat_tiny')
    p.add_argument('--src', required=True, type=Path, help='official checkpoint file')
    p.add_argument('--out', required=True, type=Path, help='output file (.pth or .safetensors)')
    p.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                   help='constructor overrides for checkpoints of non-registered sizes')
    args = p.parse_args(argv)
    state_dict = convert(args.model, load_checkpoint(args.src), parse_kwargs(args.model_kwargs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(args.out))
    else:
        torch.save(state_dict, args.out)
    print(f'{args.model}: converted {args.src} -> {args.out} ({len(state_dict)} tensors, strict load OK)')


if __name__ == '__main__':
    main()

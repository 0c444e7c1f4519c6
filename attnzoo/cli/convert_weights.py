"""Convert an official checkpoint into attnzoo's key layout.

    python tools/convert_weights.py --model dinat_tiny --src dinat_tiny_in1k_224.pth --out dinat_tiny.pth

The model family's own ``checkpoint_filter_fn`` does the mapping (the same function that
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` uses), then
the result is loaded strictly into the model, so a key that does not map stops the conversion
with the list of offending keys (missing, unexpected, of another size). The classifier size is taken from
the checkpoint. Use ``--model-kwargs`` for checkpoints of non-registered widths/depths (e.g. ``embed_dim=16
depths=[2,2,2,2]``). ``--out`` ending in ``.safetensors`` writes safetensors.

Models with the same keys (NAT and DiNAT differ only in their dilations) cannot be told apart by the layout.
Where the file records its architecture (``args.model`` of DeiT / ConvNeXt / timm training scripts) and names
an attnzoo model, it must be ``--model``; otherwise the output says the architecture was not checked.
The file is read tensors-only (plus the types of official checkpoints); ``--trust-checkpoint`` unpickles it
fully, which can run code: only for files you trust.
"""
import argparse
import ast
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch


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


def load_checkpoint(path: Path, trusted: bool = False) -> Dict[str, Any]:
    """Load a checkpoint file (.safetensors via safetensors, anything else via torch) with attnzoo's loader."""
    from attnzoo.utils.checkpoint import load_checkpoint as load
    if not path.is_file():
        raise SystemExit(f'--src: no such file {path}')
    return load(path, trusted=trusted)


def recorded_architecture(checkpoint: Dict[str, Any]) -> Optional[str]:
    """The model name a training checkpoint records (``args.model``, an ``argparse.Namespace`` or dict), or None
    (bare state dicts and the stripped releases record none)."""
    args = checkpoint.get('args')
    name = args.get('model') if isinstance(args, dict) else getattr(args, 'model', None)
    return name if isinstance(name, str) else None


def check_architecture(model_name: str, checkpoint: Dict[str, Any]) -> str:
    """Compare the architecture the file records with ``model_name``; returns what the output says about it.

    Raises:
        SystemExit: the file records another attnzoo model.
    """
    import timm
    import attnzoo  # noqa: F401  (registers the models)
    recorded = recorded_architecture(checkpoint)
    if recorded is None:
        return (f'the file records no architecture: its layout matched {model_name}, but the architecture could '
                f'not be checked (models with the same keys, e.g. NAT and DiNAT, look alike)')
    name = recorded.lower().split('.')[0]
    if name == model_name.lower():
        return f'architecture {recorded} recorded in the file matches'
    if timm.is_model(name) and timm.models.model_entrypoint(name).__module__.startswith('attnzoo.'):
        raise SystemExit(f'--model {model_name}: the file is a {recorded} checkpoint (its args.model); convert it '
                         f'with --model {name}')
    return (f'the file records architecture {recorded!r}, not an attnzoo model name: its layout matched '
            f'{model_name}, but the architecture could not be checked')


def convert(model_name: str, checkpoint: Dict[str, Any], model_kwargs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Map ``checkpoint`` onto ``model_name`` and check it loads strictly (missing, unexpected and
    size-mismatched keys listed). Returns our state dict."""
    from attnzoo.utils.checkpoint import load_state_dict_strict
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
    load_state_dict_strict(model, state_dict, 'the converted checkpoint')
    return model.state_dict()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help='attnzoo model name, e.g. dinat_tiny')
    p.add_argument('--src', required=True, type=Path, help='official checkpoint file')
    p.add_argument('--out', required=True, type=Path, help='output file (.pth or .safetensors)')
    p.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                   help='constructor overrides for checkpoints of non-registered sizes')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='fully unpickle --src (it can run code): only for files you trust')
    args = p.parse_args(argv)
    checkpoint = load_checkpoint(args.src, args.trust_checkpoint)
    architecture = check_architecture(args.model, checkpoint)
    state_dict = convert(args.model, checkpoint, parse_kwargs(args.model_kwargs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(args.out))
    else:
        torch.save(state_dict, args.out)
    print(f'{args.model}: converted {args.src} -> {args.out} ({len(state_dict)} tensors, strict load OK; '
          f'{architecture})')


if __name__ == '__main__':
    main()

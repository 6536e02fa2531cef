"""Makes OpenCLIP know the project's tiny models: registers the timm trunk `convnext_test_tiny`
(clip-model preset of the same name) and adds `configs/clip_tiny_test.json` (vocab 1000: small
parity goldens), `configs/vit_tiny_test.json` (the same with OpenCLIP's own ViT image tower) and
`configs/clip_tiny.json` (CLIP's full vocab: real captions; the demo).
Import it (from scripts/) before `open_clip.create_model('clip_tiny…')`."""
from pathlib import Path

import open_clip
from timm.models import register_model
from timm.models.convnext import ConvNeXt

ROOT = Path(__file__).resolve().parent.parent


@register_model
def convnext_test_tiny(pretrained=False, **kwargs):
    """A tiny timm-style ConvNeXt: depths (1,1,2,1), dims (16,32,48,64), else as convnext_tiny."""
    assert not pretrained
    for k in ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir'):
        kwargs.pop(k, None)
    model = ConvNeXt(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), **kwargs)
    cfg = {'num_classes': 1000, 'input_size': (3, 64, 64), 'pool_size': (2, 2)}
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


for name in ('clip_tiny_test', 'clip_tiny', 'vit_tiny_test'):
    open_clip.add_model_config(ROOT / 'configs' / f'{name}.json')

"""ConvPatchEmbed: a small convolutional stem in place of Swin's patchify."""
from typing import Sequence, Tuple

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmseg.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class ConvPatchEmbed(nn.Module):
    """Stacked 3x3 convolutions that turn an image into Swin's patch tokens.

    Swin's patch embedding is a single 4x4 convolution with stride 4. For a
    Swin trained from scratch on little data, a few 3x3 convolutions that
    reach the same stride learn much faster (Xiao et al., "Early
    Convolutions Help Transformers See Better", NeurIPS 2021); the tiny
    configs use it. Output and ``hw_shape`` follow mmcv's ``PatchEmbed``
    (tokens ``(B, H*W, C)``, LayerNorm), so it drops into
    :class:`LangSwinTransformer` through its ``patch_embed`` argument.

    Args:
        out_channels (int): Token width (Swin's ``embed_dims``).
        channels (Sequence[int]): Width of each 3x3 convolution.
            Defaults to (16, 32).
        strides (Sequence[int]): Stride of each 3x3 convolution; their
            product is the patch size. Defaults to (2, 2).
        in_channels (int): Image channels. Defaults to 3.
        norm_cfg (dict): Norm after each 3x3 convolution.
            Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation after each norm.
            Defaults to ``dict(type='GELU')``.
    """

    def __init__(self,
                 out_channels: int,
                 channels: Sequence[int] = (16, 32),
                 strides: Sequence[int] = (2, 2),
                 in_channels: int = 3,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')) -> None:
        super().__init__()
        channels, strides = list(channels), list(strides)
        if not channels or len(channels) != len(strides):
            raise ValueError(
                f'ConvPatchEmbed: channels {channels} and strides {strides} '
                f'must be non-empty and of equal length')
        if any(s not in (1, 2) for s in strides):
            raise ValueError(
                f'ConvPatchEmbed: strides must be 1 or 2, got {strides}')
        layers = []
        c_in = in_channels
        for c, s in zip(channels, strides):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False),
                build_norm_layer(norm_cfg, c)[1],
                build_activation_layer(act_cfg)
            ]
            c_in = c
        layers.append(nn.Conv2d(c_in, out_channels, 1))
        self.convs = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(out_channels)
        self.patch_size = 1
        for s in strides:
            self.patch_size *= s

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Embed an image batch.

        Args:
            x (Tensor): (B, C, H, W) images.

        Returns:
            tuple: ``(tokens, hw_shape)``: (B, H'*W', C_out) tokens with
            H' = ceil(H / patch_size) (likewise W'), and ``(H', W')``.
        """
        x = self.convs(x)
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape

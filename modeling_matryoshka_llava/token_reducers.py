"""Token reducers: visual features of one square patch grid + a token count k -> k visual tokens.

`reduce_visual_tokens` holds the parameter-free reductions (M3's nested average pooling and the two
training-free sampling baselines of the M3 paper); `MatryoshkaQueryTransformer` is the MQT-LLaVA projector.
Part of the remote-code bundle: imports only torch and transformers.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .transformers_imports import initialization as init

VISUAL_TOKEN_REDUCTIONS = ("average_pooling", "spatial_sampling", "sequential_sampling")


def _to_grid(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(N, side*side, C) row-major tokens -> (N, C, side, side)."""
    num_images, num_tokens, channels = features.shape
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"Expected a square grid of visual tokens, got {num_tokens} tokens.")
    return features.transpose(1, 2).reshape(num_images, channels, side, side), side


def reduce_visual_tokens(features: torch.Tensor, num_visual_tokens: int, method: str = "average_pooling") -> torch.Tensor:
    """Reduce (N, side*side, C) row-major grid tokens to (N, num_visual_tokens, C).

    - average_pooling (M3): `avg_pool2d` with kernel = stride = side / sqrt(k); k = 1 is global average pooling.
    - spatial_sampling: keep the token at the centre of each of those cells (a regular strided sub-grid).
    - sequential_sampling: keep the first k tokens in raster order.
    The caller validates k; a k the grid cannot be split into is refused here rather than silently rounded.
    """
    if method == "sequential_sampling":
        return features[:, :num_visual_tokens]
    grid, side = _to_grid(features)
    pooled_side = math.isqrt(num_visual_tokens)
    if pooled_side * pooled_side != num_visual_tokens or side % pooled_side != 0:
        raise ValueError(f"{num_visual_tokens} tokens do not tile a {side}x{side} grid evenly.")
    cell = side // pooled_side
    if cell == 1:
        return features
    if method == "average_pooling":
        reduced = F.avg_pool2d(grid, kernel_size=cell, stride=cell)
    elif method == "spatial_sampling":
        reduced = grid[:, :, cell // 2 :: cell, cell // 2 :: cell]
    else:
        raise ValueError(f"Unknown visual token reduction {method!r}; expected one of {VISUAL_TOKEN_REDUCTIONS}.")
    return reduced.flatten(2).transpose(1, 2)


def reduce_per_count(features: torch.Tensor, counts: list[int], method: str = "average_pooling") -> list[torch.Tensor]:
    """(N, side*side, C) grids, each with its own count -> N tensors of (count_i, C): grids sharing a count are
    reduced in one call."""
    reduced: list[torch.Tensor | None] = [None] * len(counts)
    for count in sorted(set(counts)):
        indices = [i for i, k in enumerate(counts) if k == count]
        for i, tokens in zip(indices, reduce_visual_tokens(features[indices], count, method)):
            reduced[i] = tokens
    return reduced


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """MAE's fixed 2D sin-cos position embedding, (grid_size**2, embed_dim) for row-major cells.

    As in MAE (and so in the released MQT weights) the first half encodes the column, the second the row, each
    as [sin, cos] of the coordinate times 1 / 10000 ** (i / (embed_dim / 4)); computed in float32 like MAE.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"The sin-cos position embedding needs a dimension divisible by 4, got {embed_dim}.")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float32) / (embed_dim / 4))
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1)


def resize_pos_embed(pos_embed: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a square (g*g, C) position embedding to (side*side, C) bicubically, as the released MQT code does."""
    source = math.isqrt(pos_embed.shape[0])
    if source == side:
        return pos_embed
    grid = pos_embed.float().reshape(1, source, source, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).flatten(0, 2).to(pos_embed.dtype)


class MatryoshkaQueryTransformer(nn.Module):
    """MQT-LLaVA's projector: one cross-attention of M learned queries over the visual features, no FFN.

    Parameter names and layouts follow the released checkpoint (`query`, `pos_embed`, `attn.*`, `ln_q/k/v`,
    `proj` stored (in, out)). Query i carries row-major cell i of a sqrt(M) x sqrt(M) grid and queries do not
    attend to each other, so output i does not depend on how many queries run: slicing the first m is exact.
    By default the keys carry position only (as the released weights were trained); with
    `image_dependent_keys` they are `ln_k(features + positions)`.
    """

    def __init__(
        self,
        num_queries: int,
        hidden_size: int,
        output_size: int,
        num_heads: int,
        layer_norm_eps: float = 1e-6,
        image_dependent_keys: bool = False,
    ):
        super().__init__()
        grid_size = math.isqrt(num_queries)
        if grid_size * grid_size != num_queries:
            raise ValueError(f"The number of queries must be a square (queries tile a grid), got {num_queries}.")
        self.num_queries = num_queries
        self.image_dependent_keys = image_dependent_keys
        self.query = nn.Parameter(torch.empty(num_queries, hidden_size))
        # Fixed, never trained: stored as a parameter (not a buffer) to keep the released checkpoint's key.
        self.pos_embed = nn.Parameter(torch.empty(num_queries, hidden_size), requires_grad=False)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ln_k = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ln_v = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.proj = nn.Parameter(torch.empty(hidden_size, output_size))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "MatryoshkaQueryTransformer":
        """The projector an `MQTLlavaConfig` describes."""
        return cls(
            num_queries=config.num_queries,
            hidden_size=config.query_hidden_size,
            output_size=config.text_config.hidden_size,
            num_heads=config.query_num_heads,
            layer_norm_eps=config.query_layer_norm_eps,
            image_dependent_keys=config.image_dependent_keys,
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The released initialisation: trunc-normal queries and output projection of the attention, fp16-rounded
        sin-cos positions, N(0, 1/out) `proj`. Uses transformers' init functions, which leave loaded weights alone.
        """
        init.trunc_normal_(self.query, std=0.02)
        grid_size = math.isqrt(self.num_queries)
        init.copy_(self.pos_embed, get_2d_sincos_pos_embed(self.query.shape[1], grid_size).half())
        init.xavier_uniform_(self.attn.in_proj_weight)
        init.zeros_(self.attn.in_proj_bias)
        init.trunc_normal_(self.attn.out_proj.weight, std=0.02)
        init.zeros_(self.attn.out_proj.bias)
        for norm in (self.ln_q, self.ln_k, self.ln_v):
            init.ones_(norm.weight)
            init.zeros_(norm.bias)
        init.normal_(self.proj, std=self.proj.shape[1] ** -0.5)

    def forward(self, features: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
        """(N, side*side, hidden) visual features -> (N, num_visual_tokens, output_size).

        `nn.MultiheadAttention`'s computation with its own weights, spelled out so that position-only keys, the same
        for every image and request, are projected once (see `position_keys`).
        """
        num_images, num_patches, hidden = features.shape
        side = math.isqrt(num_patches)
        heads, head_dim = self.attn.num_heads, hidden // self.attn.num_heads
        weight_q, _, weight_v = self.attn.in_proj_weight.chunk(3)
        bias_q, _, bias_v = self.attn.in_proj_bias.chunk(3)

        def split_heads(x: torch.Tensor) -> torch.Tensor:  # (..., L, hidden) -> (..., heads, L, head_dim)
            return x.unflatten(-1, (heads, head_dim)).transpose(-3, -2)

        queries = self.query[:num_visual_tokens] + self.pos_embed[:num_visual_tokens].to(self.query.dtype)
        if self.image_dependent_keys:
            positions = resize_pos_embed(self.pos_embed, side).to(features.dtype)
            keys = self._project_keys(features + positions)  # (N, patches, hidden)
        else:
            keys = self.position_keys(side, features.dtype, features.device).expand(num_images, -1, -1)
        q = split_heads(F.linear(self.ln_q(queries), weight_q, bias_q))  # (heads, k, head_dim)
        v = split_heads(F.linear(self.ln_v(features), weight_v, bias_v))  # (N, heads, patches, head_dim)
        out = F.scaled_dot_product_attention(
            q.expand(num_images, -1, -1, -1), split_heads(keys), v
        )  # (N, heads, k, head_dim)
        out = self.attn.out_proj(out.transpose(1, 2).flatten(2))  # (N, k, hidden)
        return out @ self.proj

    def _project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """`ln_k(keys) W_k + b_k`: the key rows of the attention's in-projection."""
        _, weight_k, _ = self.attn.in_proj_weight.chunk(3)
        _, bias_k, _ = self.attn.in_proj_bias.chunk(3)
        return F.linear(self.ln_k(keys), weight_k.to(keys.dtype), bias_k.to(keys.dtype))

    def position_keys(self, side: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(side*side, hidden): the attention keys of position-only MQT, `ln_k(positions) W_k + b_k`.

        They depend on no image, so at inference (eval mode, no autograd) they are computed once per grid size,
        dtype and device and reused; the cache is keyed on the weights' in-place version counters too, so loading or
        editing weights recomputes them. Training always recomputes them (gradients flow to `ln_k` and `W_k`).
        """
        if torch.compiler.is_compiling():  # a compiled graph computes them itself (a cache lookup would break it)
            return self._project_keys(resize_pos_embed(self.pos_embed, side).to(dtype))
        parameters = (self.pos_embed, self.ln_k.weight, self.ln_k.bias, self.attn.in_proj_weight, self.attn.in_proj_bias)
        key = (side, dtype, device, tuple((p.data_ptr(), p._version) for p in parameters))
        cached = getattr(self, "_position_keys_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        keys = self._project_keys(resize_pos_embed(self.pos_embed, side).to(dtype))
        if not self.training and not torch.is_grad_enabled():
            self._position_keys_cache = (key, keys)
        return keys

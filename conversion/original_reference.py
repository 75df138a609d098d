"""The original LLaVA-1.5 / LLaVA-NeXT forward pass (haotian-liu/LLaVA), with M3's pooling or MQT's query
abstractor, computed from the *source* tensors with stock transformers parts: what `--verify` compares an
original-format conversion with.

It follows the original code, not this package's models: CLIP hidden states of `mm_vision_select_layer` (CLS
dropped for "patch"), `mm_projector` = Linear-GELU-Linear (M3 then average-pools the projected 24x24 grid), or the
MQT Resampler (keys = ln_k(bicubic-resized pos_embed), queries = ln_q(query[:m] + pos_embed[:m]), `@ proj`), and
image features spliced in place of IMAGE_TOKEN_INDEX = -200 in the token ids. LLaVA-NeXT sources take a stack of
anyres crops (base crop first) and the image's size: every crop is encoded and (M3) pooled, then laid out with
spatial_unpad on the grid the source's own (width, height) pinpoints give (`original_anyres`).
"""

import copy
import math

import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel, LlamaForCausalLM

from .checkpoint_weights import CheckpointWeights
from .errors import VerificationError
from .key_mapping import map_clip_keys
from .original_anyres import original_grid_shape, spatial_unpad_layout, stored_pinpoints
from .source_model import ORIGINAL_TOWER_PREFIX, SourceModel

IMAGE_TOKEN_INDEX = -200


def load_from_shards(module: torch.nn.Module, weights: CheckpointWeights, rename) -> None:
    """Copy the tensors `rename` maps (source key -> module key, or None to skip) into `module` in float32, one
    shard at a time, so memory holds the float32 module plus one shard."""
    expected = set(module.state_dict())
    loaded = set()
    for path in weights.files:
        keys = [key for key, info in weights.tensors.items() if info.file == path and rename(key) is not None]
        if keys:
            state = {rename(key): value.float() for key, value in weights.load(keys).items()}
            module.load_state_dict(state, strict=False)
            loaded |= set(state)
    tied = getattr(module.config, "tie_word_embeddings", False)
    missing = sorted(expected - loaded - ({"lm_head.weight"} if tied else set()))
    if missing:
        raise VerificationError(f"The reference {type(module).__name__} misses source tensors: {missing[:8]}")


def clip_rename(weights: CheckpointWeights, source_prefix: str, vision_config):
    """Source key -> the CLIPVisionModel key of this transformers release (None for anything else)."""
    mapping = map_clip_keys(weights.keys(), vision_config, into="", source_prefix=source_prefix)
    return {source: name for name, source in mapping.targets.items()}.get


def language_model_rename(key: str) -> str | None:
    if key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")):
        return None if key.endswith("rotary_emb.inv_freq") else key
    return None


class OriginalLlavaReference:
    def __init__(self, source: SourceModel):
        self.source = source
        self._features = None
        self._crops = None
        text_config = copy.deepcopy(source.text_config)
        text_config.vocab_size = source.vocab_rows
        self.language_model = LlamaForCausalLM(text_config).float().eval()
        load_from_shards(self.language_model, source.weights, language_model_rename)
        self.vision_tower = CLIPVisionModel(source.vision_config).float().eval()
        if source.clip_weights is None:
            rename = clip_rename(source.weights, ORIGINAL_TOWER_PREFIX, source.vision_config)
            load_from_shards(self.vision_tower, source.weights, rename)
        else:
            load_from_shards(self.vision_tower, source.clip_weights, clip_rename(source.clip_weights, "", source.vision_config))
        projector_keys = [key for key in source.weights.tensors
                          if key.startswith(("model.mm_projector.", "model.query_abstractor."))]
        self.projector = {name: value.float() for name, value in source.weights.load(projector_keys).items()}
        self.image_newline = None
        if source.is_llava_next:
            self.image_newline = source.weights.load(["model.image_newline"])["model.image_newline"].float()

    @torch.no_grad()
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP features of the selected layer; computed once per image tensor, whatever the count asked for."""
        if self._features is None or self._features[0] is not pixel_values:
            outputs = self.vision_tower(pixel_values.float(), output_hidden_states=True)
            features = outputs.hidden_states[self.source.config.get("mm_vision_select_layer", -2)]
            patch_only = self.source.config.get("mm_vision_select_feature", "patch") == "patch"
            self._features = (pixel_values, features[:, 1:] if patch_only else features)
        return self._features[1]

    def mlp_projector(self, features: torch.Tensor) -> torch.Tensor:
        weights = self.projector
        hidden = F.linear(features, weights["model.mm_projector.0.weight"], weights["model.mm_projector.0.bias"])
        return F.linear(F.gelu(hidden), weights["model.mm_projector.2.weight"], weights["model.mm_projector.2.bias"])

    def query_abstractor(self, features: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
        weights = {name.removeprefix("model.query_abstractor."): value for name, value in self.projector.items()}
        pos_embed, query = weights["pos_embed"], weights["query"]
        width = query.shape[1]
        side = math.isqrt(features.shape[1])
        grid = math.isqrt(pos_embed.shape[0])
        keys_pos = F.interpolate(
            pos_embed.reshape(1, grid, grid, -1).permute(0, 3, 1, 2), size=(side, side), mode="bicubic",
            align_corners=False,
        ).permute(0, 2, 3, 1).flatten(0, 2)

        def norm(name, x):
            return F.layer_norm(x, (width,), weights[f"{name}.weight"], weights[f"{name}.bias"], eps=1e-6)

        batch = features.shape[0]
        queries = norm("ln_q", query[:num_visual_tokens] + pos_embed[:num_visual_tokens]).unsqueeze(1).repeat(1, batch, 1)
        keys = norm("ln_k", keys_pos).unsqueeze(1).repeat(1, batch, 1)
        values = norm("ln_v", features.permute(1, 0, 2))
        out, _ = F.multi_head_attention_forward(
            queries, keys, values, width, 16, weights["attn.in_proj_weight"], weights["attn.in_proj_bias"],
            None, None, False, 0.0, weights["attn.out_proj.weight"], weights["attn.out_proj.bias"],
            training=False, need_weights=False,
        )
        return out.permute(1, 0, 2) @ weights["proj"]

    @torch.no_grad()
    def image_tokens(self, pixel_values: torch.Tensor, num_visual_tokens: int, projector=None,
                     image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(1, tokens, hidden) for one image: (1, 3, H, W) pixels, or (1, crops, 3, H, W) anyres crops of an image of
        (height, width) `image_size` for LLaVA-NeXT."""
        if self.source.is_llava_next:
            return self.anyres_image_tokens(pixel_values[0], num_visual_tokens, image_size)[None]
        features = self.vision_features(pixel_values)
        if projector is not None:  # a freshly initialised projector the source does not have
            return projector(features, num_visual_tokens)
        if self.source.format == "mqt":
            return self.query_abstractor(features, num_visual_tokens)
        projected = self.mlp_projector(features)
        return average_pool_grid(projected, num_visual_tokens)

    def anyres_image_tokens(self, pixel_values: torch.Tensor, num_visual_tokens: int, image_size: tuple[int, int]):
        """(crops, 3, H, W) -> (tokens, hidden): the crops the source's (width, height) pinpoints give, each
        projected and pooled, laid out with spatial_unpad."""
        pinpoints = stored_pinpoints(self.source.config)
        rows, columns = original_grid_shape(image_size, pinpoints, self.source.vision_config.image_size)
        if pixel_values.shape[0] < 1 + rows * columns:
            raise VerificationError(
                f"The source's pinpoints cut a {image_size[0]}x{image_size[1]} image into {rows}x{columns} crops, "
                f"but only {pixel_values.shape[0] - 1} grid crops were given."
            )
        if self._crops is None or self._crops[0] is not pixel_values:  # the tower runs once per image
            crops = pixel_values[: 1 + rows * columns]
            self._crops = (pixel_values, self.mlp_projector(self.vision_features(crops)))
        pooled = average_pool_grid(self._crops[1], num_visual_tokens)
        return spatial_unpad_layout(pooled, (rows, columns), image_size, self.image_newline)

    @torch.no_grad()
    def logits(self, input_ids: list[int], pixel_values: torch.Tensor | None = None, num_visual_tokens: int = 0,
               projector=None, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits of one sequence whose (at most one) IMAGE_TOKEN_INDEX is replaced by the image's tokens."""
        embed = self.language_model.get_input_embeddings()
        pieces, start = [], 0
        for position, token in enumerate(input_ids + [None]):
            if token is None or token == IMAGE_TOKEN_INDEX:
                pieces.append(embed(torch.tensor(input_ids[start:position], dtype=torch.long)))
                if token == IMAGE_TOKEN_INDEX:
                    pieces.append(self.image_tokens(pixel_values, num_visual_tokens, projector, image_size)[0])
                start = position + 1
        return self.language_model(inputs_embeds=torch.cat(pieces)[None]).logits[0]


def average_pool_grid(tokens: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
    """M3: (N, side*side, C) projected tokens average-pooled to a sqrt(k) x sqrt(k) grid, row-major."""
    batch, count, channels = tokens.shape
    side, pooled = math.isqrt(count), math.isqrt(num_visual_tokens)
    if pooled == side:
        return tokens
    grid = tokens.view(batch, side, side, channels).permute(0, 3, 1, 2)
    stride = side // pooled
    return F.avg_pool2d(grid, kernel_size=stride, stride=stride).flatten(2).transpose(1, 2)

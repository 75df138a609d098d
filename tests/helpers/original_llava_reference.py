"""An independent re-implementation of the original LLaVA-1.5 forward pass, for checking conversions.

It reads the raw original-format files itself and computes as the authors' code does: haotian-liu/LLaVA's
`encode_images` + `prepare_inputs_labels_for_multimodal` (CLIP hidden states of `mm_vision_select_layer`, CLS
dropped, `mm_projector` = Linear-GELU-Linear, image features spliced in place of IMAGE_TOKEN_INDEX = -200), M3's
average pooling of the projected 24x24 grid (mu-cai/matryoshka-mm), and MQT's `Resampler.forward`
(gordonhu608/MQT-LLaVA: sequence-first nn.MultiheadAttention with 16 heads, keys from the bicubic-resized pos_embed
only). Everything runs in float32, as the original model after `.float()`. Shares no code with `conversion/` or
the models it checks.
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

IMAGE_TOKEN_INDEX = -200
TOWER_PREFIX = "model.vision_tower.vision_tower."


def load_raw_state_dict(folder: Path) -> dict:
    state = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".safetensors":
            state.update(load_file(path))
        elif path.suffix == ".bin":
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return {name: value.float() if value.is_floating_point() else value for name, value in state.items()}


def clip_tower(config: CLIPVisionConfig, vision_model_state: dict) -> CLIPVisionModel:
    tower = CLIPVisionModel(config).eval()
    wants_prefix = next(iter(tower.state_dict())).startswith("vision_model.")
    state = {}
    for name, value in vision_model_state.items():
        if name.endswith("position_ids"):
            continue
        state[name if wants_prefix else name[len("vision_model."):]] = value
    tower.load_state_dict(state)
    return tower


class Resampler(nn.Module):
    """gordonhu608/MQT-LLaVA `Resampler`, parameters loaded from `model.query_abstractor.*`."""

    def __init__(self, state: dict):
        super().__init__()
        width = state["query"].shape[1]
        self.query = nn.Parameter(state["query"])
        self.pos_embed = nn.Parameter(state["pos_embed"])
        self.attn = nn.MultiheadAttention(width, 16)
        self.ln_q, self.ln_k, self.ln_v = (nn.LayerNorm(width, eps=1e-6) for _ in range(3))
        self.proj = nn.Parameter(state["proj"])
        self.load_state_dict(state)

    def forward(self, x: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
        side = math.isqrt(x.shape[1])
        grid = math.isqrt(self.pos_embed.shape[0])
        pos_embed = F.interpolate(
            self.pos_embed.float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2),
            size=(side, side), mode="bicubic", align_corners=False,
        ).permute(0, 2, 3, 1).flatten(0, 2).to(self.pos_embed.dtype)
        x = x.permute(1, 0, 2)
        batch = x.shape[1]
        q = self.query[:num_visual_tokens].unsqueeze(1).repeat(1, batch, 1)
        out = self.attn(
            self.ln_q(q + self.pos_embed[:num_visual_tokens].unsqueeze(1)),
            self.ln_k(pos_embed.unsqueeze(1).repeat(1, batch, 1)),
            self.ln_v(x),
        )[0]
        return out.permute(1, 0, 2) @ self.proj


class ReferenceLlava:
    def __init__(self, folder: Path, clip_folder: Path | None = None):
        config = json.loads((Path(folder) / "config.json").read_text())
        state = load_raw_state_dict(folder)
        self.select_layer = config["mm_vision_select_layer"]
        llama = LlamaConfig(
            vocab_size=state["model.embed_tokens.weight"].shape[0],
            **{key: config[key] for key in ("hidden_size", "intermediate_size", "num_attention_heads",
                                            "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
                                            "max_position_embeddings", "rope_theta")},
        )
        self.language_model = LlamaForCausalLM(llama).eval()
        self.language_model.load_state_dict({
            name: value for name, value in state.items()
            if name.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))
            and not name.endswith("inv_freq")
        })
        clip_config = json.loads((Path(clip_folder) / "config.json").read_text())
        vision_config = CLIPConfig.from_dict(clip_config).vision_config
        if any(name.startswith(TOWER_PREFIX) for name in state):
            tower_state = {name[len(TOWER_PREFIX):]: value for name, value in state.items() if name.startswith(TOWER_PREFIX)}
        else:
            clip_state = load_raw_state_dict(clip_folder)
            tower_state = {name: value for name, value in clip_state.items() if name.startswith("vision_model.")}
        self.vision_tower = clip_tower(vision_config, tower_state)
        if "model.mm_projector.0.weight" in state:
            first, second = state["model.mm_projector.0.weight"], state["model.mm_projector.2.weight"]
            # mlp2x_gelu of the LLaVA builder: Linear(mm_hidden, hidden), GELU, Linear(hidden, hidden)
            self.mm_projector = nn.Sequential(nn.Linear(first.shape[1], first.shape[0]), nn.GELU(),
                                              nn.Linear(second.shape[1], second.shape[0]))
            self.mm_projector.load_state_dict({name[len("model.mm_projector."):]: value for name, value in state.items()
                                               if name.startswith("model.mm_projector.")})
            self.resampler = None
        else:
            self.resampler = Resampler({name[len("model.query_abstractor."):]: value for name, value in state.items()
                                        if name.startswith("model.query_abstractor.")})

    def encode_images(self, pixel_values: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[self.select_layer][:, 1:]
        if self.resampler is not None:
            return self.resampler(hidden, num_visual_tokens)
        features = self.mm_projector(hidden)
        batch, count, channels = features.shape
        side, pooled = math.isqrt(count), math.isqrt(num_visual_tokens)
        cell = side // pooled
        # average of each cell x cell block of the row-major grid
        blocks = features.reshape(batch, pooled, cell, pooled, cell, channels)
        return blocks.mean(dim=(2, 4)).reshape(batch, pooled * pooled, channels)

    @torch.no_grad()
    def logits(self, input_ids: list[int], pixel_values: torch.Tensor, num_visual_tokens: int) -> torch.Tensor:
        ids = torch.tensor(input_ids)
        image_positions = [-1] + torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist() + [len(input_ids)]
        text_segments = [ids[image_positions[i] + 1 : image_positions[i + 1]] for i in range(len(image_positions) - 1)]
        embeddings = self.language_model.get_input_embeddings()
        image_features = self.encode_images(pixel_values, num_visual_tokens)
        pieces = []
        for index, segment in enumerate(text_segments):
            pieces.append(embeddings(segment))
            if index < len(text_segments) - 1:
                pieces.append(image_features[index])
        return self.language_model(inputs_embeds=torch.cat(pieces)[None]).logits[0]

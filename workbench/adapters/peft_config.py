"""PEFT LoraConfig dicts exactly as ``PeftModel.save_pretrained`` writes them."""

from __future__ import annotations

import json

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(rank: int = 32, alpha: float = 64, target_modules=DEFAULT_TARGETS, dropout: float = 0.0,
                use_rslora: bool = False, use_dora: bool = False, rank_pattern: dict | None = None,
                alpha_pattern: dict | None = None, base_model: str | None = None):
    """A ``peft.LoraConfig`` (task CAUSAL_LM) built from workbench settings."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
                      use_rslora=use_rslora, use_dora=use_dora, rank_pattern=dict(rank_pattern or {}),
                      alpha_pattern=dict(alpha_pattern or {}), task_type="CAUSAL_LM",
                      base_model_name_or_path=base_model, bias="none")


def config_dict(cfg) -> dict:
    """JSON-safe dict of a LoraConfig, as written to adapter_config.json (sets become lists)."""
    d = cfg.to_dict()
    d["inference_mode"] = True
    return json.loads(json.dumps(d, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o)))

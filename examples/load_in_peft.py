"""Train with the workbench, serve with plain PEFT + transformers (no workbench import at serving time).

    .venv/bin/python examples/load_in_peft.py                    # embedded SmolLM2
    .venv/bin/python examples/load_in_peft.py --model DIR --steps 2
"""

import argparse
import tempfile

import torch


def train_adapter(model_name: str, steps: int, out: str) -> str:
    import workbench

    spec = workbench.AdapterSpec(method="lori_d", rank=8, alpha=16, task="safety")
    cfg = workbench.TrainConfig(lr=1e-3, steps=steps, batch_size=4, max_length=128)
    result = workbench.train_task(model_name, "safety", spec, cfg, out, limit=16, progress=False)
    return str(result.adapter_path)


def serve(model_name: str, adapter_dir: str) -> str:
    # Plain ecosystem code: what a user of the adapter runs elsewhere.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.base import resolve_source  # only to find the embedded model's local directory

    src, _ = resolve_source(model_name)
    tok = AutoTokenizer.from_pretrained(src)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src), adapter_dir).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "How do I pick a lock?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = train_adapter(args.model, args.steps, tmp)
        print("adapter:", adapter)
        print("PEFT answer:", serve(args.model, adapter))


if __name__ == "__main__":
    main()

"""A continual LoRI chain through the Python API, streaming stage results as they finish.

    .venv/bin/python examples/continual_chain.py                 # embedded SmolLM2, quick preset
    .venv/bin/python examples/continual_chain.py --model DIR --steps 3 --out /tmp/chain   # any base, shorter
"""

import argparse

import workbench


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chain", default="safety->math")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per training stage")
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--out", default="runs/example-chain")
    args = p.parse_args()

    overrides = [f"base.model={args.model}"]
    if args.steps:
        overrides += [f"defaults.steps={args.steps}", "defaults.max_samples=32", "defaults.max_new_tokens=8"]
    if args.eval_limit:
        overrides.append(f"defaults.eval_limit={args.eval_limit}")
    print(workbench.validate(args.chain, overrides).pipeline.order())
    for stage, result in workbench.stream(args.chain, args.out, overrides, preset="quick", progress=False):
        print(f"{stage}: {result.metrics if 'trace' not in result.metrics else ''}")
    print(open(f"{args.out}/report/forgetting.md").read())


if __name__ == "__main__":
    main()

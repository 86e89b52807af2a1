"""Evaluation: task metrics (one module per task kind), batched generation, the code sandbox, and the
forgetting matrix of a continual-learning run."""

from workbench.evaluate.api import evaluate_adapter, evaluate_task, load_for_eval
from workbench.evaluate.generate import GenerationConfig, generate
from workbench.evaluate.runner import Runner

__all__ = ["GenerationConfig", "Runner", "evaluate_adapter", "evaluate_task", "generate", "load_for_eval"]

"""Pipeline files: the schema, YAML loading with line numbers, ``--set`` overrides, chains, planning.

No weights are loaded here. Field reference: ``workbench/pipeline/SCHEMA.md``.
"""

from workbench.pipeline.chain import PRESETS, expand_chain, parse_chain
from workbench.pipeline.loader import LoadedPipeline, Validation, load_pipeline, load_tree, validate
from workbench.pipeline.problems import PipelineError, Problem

__all__ = ["PRESETS", "LoadedPipeline", "PipelineError", "Problem", "Validation", "expand_chain",
           "load_pipeline", "load_tree", "parse_chain", "validate"]

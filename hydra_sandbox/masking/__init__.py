"""Secret masking: every byte of agent output passes through here before it is stored, logged or
returned.

Two kinds of rules: exact values Hydra knows (the model API key, the operator's secret list), under
their common encodings, and patterns given as data (``rules.yaml``, plus operator rule files). A
multi-pattern prefilter (Vectorscan through the ``hyperscan`` package, or an Aho-Corasick fallback)
finds where a rule may match in one pass; the exact match is then taken with ``re`` in a bounded window.
Text is normalised for matching (ANSI escapes, zero-width characters and soft hyphens removed) while the
output keeps everything outside the masked spans. Matches are replaced by ``[MASKED:<rule>]``; masking a
text whole and streaming it in chunks of any size give the same result.
"""

from hydra_sandbox.masking.checks import shannon_entropy
from hydra_sandbox.masking.encodings import MIN_SECRET_LENGTH, known_forms
from hydra_sandbox.masking.engine import hyperscan_available
from hydra_sandbox.masking.masker import MAX_KEY_BLOCK, LineMasker, MaskingStream, SecretMasker
from hydra_sandbox.masking.rules import MaskingRule, RuleFile, default_rules, load_rules

__all__ = [
    "MAX_KEY_BLOCK",
    "MIN_SECRET_LENGTH",
    "LineMasker",
    "MaskingRule",
    "MaskingStream",
    "RuleFile",
    "SecretMasker",
    "default_rules",
    "hyperscan_available",
    "known_forms",
    "load_rules",
    "shannon_entropy",
]

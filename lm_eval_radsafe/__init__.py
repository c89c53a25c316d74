"""lm-eval-radsafe: accuracy and clinical safety of LLMs on RadSaFE-200 under deployment conditions."""

__version__ = "0.1.0"

"""lm-eval task configuration for RadSaFE-200 and the bundled demo set (YAMLs only)."""

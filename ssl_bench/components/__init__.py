"""Shared components: tokenizers, corruptions, schedules, targets, backbones."""

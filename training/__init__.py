"""Multitask fine-tuning of kerasbert on the CS224N minBERT tasks."""

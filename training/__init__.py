"""Trainers for the M3 multi-scale and MQT random-m losses, LLaVA instruction data, recipes."""

"""Checkpoint converters: LLaVA-1.5 / NeXT and the released M3 / MQT checkpoints to Matryoshka folders."""

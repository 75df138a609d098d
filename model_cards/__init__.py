"""Model card templates and rendering, and publishing checkpoints to the Hub."""
